/* prepare.h — `anvil train prepare`: text files -> token shards. */
#ifndef ANVIL_TRAIN_PREPARE_H
#define ANVIL_TRAIN_PREPARE_H

/* argv after "prepare"; returns the exit code (0, 1, 2). */
int cmd_prepare(int argc, char **argv);

#endif
