/* loop.h — `anvil train` itself (pretraining; see opts.h for the settings). */
#ifndef ANVIL_TRAIN_LOOP_H
#define ANVIL_TRAIN_LOOP_H

/* argv after "train"; returns the exit code (0, 1, 2, 128+signal). */
int cmd_train(int argc, char **argv);

#endif
