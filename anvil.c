/* anvil — dispatcher: `anvil <tool> args...` runs anvil-<tool> from the same
 * folder as this binary (then from PATH). */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct { const char *name, *what; } TOOLS[] = {
    { "convert", "convert between GGUF, safetensors and llama2.c formats" },
    { "info", "describe a model file: metadata, tensors, parameter count" },
    { "tokenizer", "encode/decode text with any vocabulary; train byte-level BPE" },
    { "train", "pretrain Llama models; token datasets (train prepare), loss plots (train plot)" },
    { "quantize", "quantize GGUF models to Q4_0..Q8_0, K-quant mixes, F16/BF16 as llama-quantize does" },
    { "eval", "perplexity, KLD and top-1 agreement as a CI gate (--gate, exit 3)" },
    { "run", "generate text with a model: sampling, beam search, stop strings, --bench" },
    { "lora", "merge LoRA adapters (llama.cpp GGUF) into a model (run/eval take --lora directly)" },
};
#define N_TOOLS (sizeof TOOLS / sizeof TOOLS[0])

static void usage(FILE *f) {
    fprintf(f, "usage: anvil <tool> [args...]\n       anvil <tool> --help\n\ntools:\n");
    for (size_t i = 0; i < N_TOOLS; i++) fprintf(f, "  %-10s %s\n", TOOLS[i].name, TOOLS[i].what);
    fprintf(f, "\nExit codes: 0 ok, 1 failure, 2 usage error.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return 2; }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) { usage(stdout); return 0; }
    const char *tool = argv[1];
    int known = 0;
    for (size_t i = 0; i < N_TOOLS; i++) known |= !strcmp(TOOLS[i].name, tool);
    if (!known) {
        fprintf(stderr, "anvil: unknown tool '%s'\n", tool);
        usage(stderr);
        return 2;
    }
    char self[PATH_MAX], path[PATH_MAX + 64];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    argv[1] = NULL;
    char name[64];
    snprintf(name, sizeof name, "anvil-%s", tool);
    if (n > 0) {
        self[n] = '\0';
        snprintf(path, sizeof path, "%s/%s", dirname(self), name);
        argv[1] = path;
        execv(path, argv + 1);
        if (errno != ENOENT) { fprintf(stderr, "anvil: cannot run %s: %s\n", path, strerror(errno)); return 1; }
    }
    argv[1] = name;
    execvp(name, argv + 1);
    fprintf(stderr, "anvil: tool '%s' is not built (no %s beside anvil or on PATH)\n", tool, name);
    return 1;
}
