/* anvil train — pretraining tools. Subcommands dispatch from here; for now
 * only `prepare` (text -> token shards) is built; the training loop comes
 * next (see README.md). */
#include <stdio.h>
#include <string.h>

#include "prepare.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *what;
} CMDS[] = {
    { "prepare", cmd_prepare, "tokenize text files into train/val token shards (DIR/train.bin, val.bin, meta.json)" },
};
#define N_CMDS (sizeof CMDS / sizeof CMDS[0])

static void usage(FILE *f) {
    fprintf(f, "usage: anvil train <command> [args...]\n       anvil train <command> --help\n\ncommands:\n");
    for (size_t i = 0; i < N_CMDS; i++) fprintf(f, "  %-10s %s\n", CMDS[i].name, CMDS[i].what);
    fprintf(f,
            "\nTraining itself (pretraining, LoRA) is not built yet: `anvil train prepare` makes the\n"
            "datasets it will read.\n"
            "\nExit codes: 0 ok, 1 failure, 2 usage error.\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < N_CMDS; i++)
        if (!strcmp(argv[1], CMDS[i].name)) return CMDS[i].run(argc - 2, argv + 2);
    fprintf(stderr, "anvil train: unknown command '%s' (prepare; training itself is not built yet)\n", argv[1]);
    usage(stderr);
    return 2;
}
