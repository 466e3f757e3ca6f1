/* anvil train — pretraining. `anvil train [options]` trains (loop.c);
 * `prepare` makes token shards, `plot` draws metrics. */
#include <stdio.h>
#include <string.h>

#include "loop.h"
#include "plot.h"
#include "prepare.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
} CMDS[] = {
    { "prepare", cmd_prepare },
    { "plot", cmd_plot },
};

int main(int argc, char **argv) {
    if (argc >= 2)
        for (size_t i = 0; i < sizeof CMDS / sizeof CMDS[0]; i++)
            if (!strcmp(argv[1], CMDS[i].name)) return CMDS[i].run(argc - 2, argv + 2);
    if (argc < 2) {
        fprintf(stderr, "anvil train: no arguments (see --help)\n");
        return 2;
    }
    return cmd_train(argc - 1, argv + 1);
}
