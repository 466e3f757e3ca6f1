/* train.h — `anvil tokenizer train` (byte-level BPE). */
#ifndef ANVIL_TOKENIZER_TRAIN_H
#define ANVIL_TOKENIZER_TRAIN_H

/* argv after "train"; returns the process exit code. */
int cmd_train(int argc, char **argv);

#endif
