/* anvil eval — perplexity of a model, and agreement between two models as a
 * CI gate, computed the way llama.cpp's llama-perplexity does. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eval.h"
#include "gguf.h"
#include "io.h"
#include "loader.h"

#define EXIT_GATE 3

static void usage(FILE *f) {
    fprintf(f,
            "usage: anvil eval perplexity MODEL --text FILE [-c CTX] [-b BATCH] [-t THREADS] [--json]\n"
            "       anvil eval compare BASE TEST --text FILE [-c CTX] [--gate EXPR] [--json]\n"
            "       anvil eval imatrix MODEL --text FILE -o IMATRIX.gguf [-c CTX]\n"
            "\n"
            "perplexity: the text (BOS first) is cut into floor(tokens/CTX) chunks, each starting with\n"
            "  BOS; the second half of each chunk is scored, as llama-perplexity does. Running values\n"
            "  go to stderr, the final PPL +/- stderr to stdout.\n"
            "compare: both models on the same chunks: mean/median/p99 KL divergence KL(BASE||TEST),\n"
            "  top-1 agreement, both perplexities and their ratio. With --gate the exit code is 3 when\n"
            "  a condition fails (0 when all hold), for CI.\n"
            "imatrix: importance matrix as llama-imatrix collects it (sum of squared inputs of every\n"
            "  layer weight over all chunk tokens), written in llama.cpp's imatrix GGUF form, which\n"
            "  anvil quantize --imatrix and llama-quantize --imatrix read.\n"
            "\n"
            "  --text FILE        text to score (required)\n"
            "  -c, --ctx-size N   chunk length (default 512; even, >= 4)\n"
            "  -b, --batch N      tokens per forward call (default: CTX)\n"
            "  -t, --threads N    threads (default: all cores)\n"
            "  --chunks N         score only the first N chunks (default: all)\n"
            "  --tokenizer FILE   vocabulary instead of the model's own (llama2.c .bin needs it)\n"
            "  --lora A.gguf[:S]  LoRA adapter (llama.cpp GGUF) at scale S (default 1), applied\n"
            "                     at run time (weights stay as stored, quantized too); repeatable,\n"
            "                     they add up; applies to MODEL, or to TEST with compare\n"
            "  --gate EXPR        comma-separated conditions METRIC OP VALUE, OP one of <= >= < >,\n"
            "                     METRIC one of ppl_ratio kld kld_median kld_p99 kld_max top1 ppl\n"
            "                     ppl_base, e.g. \"ppl_ratio<=1.02,kld<=0.05,top1>=0.9\"\n"
            "  -o, --output FILE  imatrix output (.gguf)\n"
            "  --json             one JSON object on stdout instead of text\n"
            "  -q, --quiet        no running values on stderr\n"
            "  -h, --help\n"
            "\n"
            "Exit codes: 0 ok (gate holds), 1 failure, 2 usage error, 3 gate failed.\n");
}

#define USAGE_ERR(...)                                      \
    do {                                                    \
        fprintf(stderr, "anvil eval: " __VA_ARGS__);        \
        fprintf(stderr, " (see anvil eval --help)\n");      \
        return 2;                                           \
    } while (0)

typedef struct opts {
    const char *cmd, *model[2], *text, *tokenizer, *gate, *output;
    int n_ctx, n_batch, n_threads, max_chunks, json, quiet;
    const char *lora[16]; /* --lora: on MODEL (perplexity, imatrix) or TEST (compare) */
    int n_lora;
} opts;

/* ---- gate --------------------------------------------------------------- */

static int metric(const ev_compare *c, const char *name, size_t n, double *v) {
    static const char *names[] = {"ppl_ratio", "kld", "kld_median", "kld_p99", "kld_max",
                                  "top1", "ppl", "ppl_base"};
    double vals[] = {c ? c->ppl_ratio : 0, c ? c->kld_mean : 0, c ? c->kld_median : 0,
                     c ? c->kld_p99 : 0, c ? c->kld_max : 0, c ? c->top1 : 0,
                     c ? c->test.ppl : 0, c ? c->base.ppl : 0};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (strlen(names[i]) == n && strncmp(names[i], name, n) == 0) {
            *v = vals[i];
            return 0;
        }
    return -1;
}

/* Check expr against c (c == NULL: syntax only). Returns 1 when all hold, 0
 * when one fails (reported in fail_msg), -1 on a syntax error (in fail_msg). */
static int gate_eval(const char *expr, const ev_compare *c, char *fail_msg, size_t fn) {
    const char *p = expr;
    int ok = 1;
    fail_msg[0] = 0;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char cond[128];
        if (len == 0 || len >= sizeof cond) {
            snprintf(fail_msg, fn, "empty or overlong condition in --gate '%s'", expr);
            return -1;
        }
        memcpy(cond, p, len);
        cond[len] = 0;
        size_t m = strcspn(cond, "<>=");
        const char *op = cond + m;
        int oplen = (op[0] == '<' || op[0] == '>') ? (op[1] == '=' ? 2 : 1) : 0;
        char *end;
        double want = oplen ? strtod(op + oplen, &end) : 0, have;
        if (!oplen || m == 0 || end == op + oplen || *end || metric(c, cond, m, &have) != 0) {
            snprintf(fail_msg, fn, "bad condition '%s' in --gate (METRIC OP VALUE, see --help)", cond);
            return -1;
        }
        if (c) {
            int holds = op[0] == '<' ? (oplen == 2 ? have <= want : have < want)
                                     : (oplen == 2 ? have >= want : have > want);
            if (!holds && ok) {
                snprintf(fail_msg, fn, "gate failed: %.*s = %.6g, wanted %s", (int)m, cond, have, op);
                ok = 0;
            }
        }
        p += len + (e ? 1 : 0);
    }
    return ok;
}

/* ---- main --------------------------------------------------------------- */

static void progress(void *ud, int chunk, int n_chunks, double running) {
    (void)n_chunks;
    if (*(int *)ud) return;
    fprintf(stderr, "[%d]%.4f,", chunk + 1, running);
    if ((chunk + 1) % 16 == 0 || chunk + 1 == n_chunks) fputc('\n', stderr);
}

static void progress_plain(void *ud, int chunk, int n_chunks, double unused) {
    (void)unused;
    if (*(int *)ud) return;
    fprintf(stderr, "\rchunk %d/%d", chunk + 1, n_chunks);
}

static json_t *ppl_json(const ev_ppl *p) {
    json_t *j = json_object();
    json_object_set_new(j, "ppl", json_real(p->ppl));
    json_object_set_new(j, "stderr", json_real(p->ppl_stderr));
    json_object_set_new(j, "chunks", json_integer(p->n_chunks));
    json_object_set_new(j, "scored_tokens", json_integer(p->n_scored));
    return j;
}

int main(int argc, char **argv) {
    opts o = {.n_ctx = 512};
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--json")) { o.json = 1; continue; }
        if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) { o.quiet = 1; continue; }
        if (a[0] == '-' && a[1]) {
            if (i + 1 >= argc) USAGE_ERR("%s needs a value", a);
            const char *v = argv[++i];
            if (!strcmp(a, "--text")) o.text = v;
            else if (!strcmp(a, "--tokenizer")) o.tokenizer = v;
            else if (!strcmp(a, "--lora")) {
                if (o.n_lora >= 16) USAGE_ERR("at most 16 --lora adapters");
                o.lora[o.n_lora++] = v;
            }
            else if (!strcmp(a, "--gate")) o.gate = v;
            else if (!strcmp(a, "-o") || !strcmp(a, "--output")) o.output = v;
            else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) {
                if (av_parse_int(v, 4, 1 << 20, &o.n_ctx) || o.n_ctx % 2)
                    USAGE_ERR("-c '%s' is not an even number >= 4", v);
            } else if (!strcmp(a, "-b") || !strcmp(a, "--batch")) {
                if (av_parse_int(v, 1, 1 << 20, &o.n_batch)) USAGE_ERR("-b '%s' is not a positive integer", v);
            } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
                if (av_parse_int(v, 1, 4096, &o.n_threads)) USAGE_ERR("-t '%s' is not a positive integer", v);
            } else if (!strcmp(a, "--chunks")) {
                if (av_parse_int(v, 1, 1 << 30, &o.max_chunks)) USAGE_ERR("--chunks '%s' is not a positive integer", v);
            } else USAGE_ERR("unknown option '%s'", a);
            continue;
        }
        if (!o.cmd) o.cmd = a;
        else if (npos < 2) o.model[npos++] = a;
        else USAGE_ERR("unexpected argument '%s'", a);
    }
    if (!o.cmd) USAGE_ERR("no subcommand (perplexity, compare or imatrix)");
    const int cmp = !strcmp(o.cmd, "compare"), imx = !strcmp(o.cmd, "imatrix");
    if (!cmp && !imx && strcmp(o.cmd, "perplexity"))
        USAGE_ERR("unknown subcommand '%s' (perplexity, compare or imatrix)", o.cmd);
    if (imx && !o.output) USAGE_ERR("imatrix needs -o IMATRIX.gguf");
    if (!imx && o.output) USAGE_ERR("-o goes with imatrix");
    if (npos != (cmp ? 2 : 1)) USAGE_ERR("%s takes %s", o.cmd, cmp ? "BASE and TEST models" : "one MODEL");
    if (!o.text) USAGE_ERR("--text FILE is required");
    char msg[256];
    if (o.gate && !cmp) USAGE_ERR("--gate goes with compare");
    if (o.gate && gate_eval(o.gate, NULL, msg, sizeof msg) < 0) USAGE_ERR("%s", msg);

    av_err err = {0};
    av_loaded x[2] = {{0}};
    char *text = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0, text_len = 0;
    int rc = 1;
    for (int k = 0; k < npos; k++)
        if (av_load_lora(o.model[k], o.tokenizer, k == 0, o.lora, k == npos - 1 ? o.n_lora : 0, &x[k], &err))
            goto fail;
    if (av_read_file(o.text, (size_t)1 << 32, &text, &text_len, &err)) goto fail;
    tok_opts to = {.add_special = 1, .parse_special = 0};
    if (tok_encode(x[0].tok, text, text_len, &to, &ids, &n_ids, &err)) goto fail;
    ev_opts eo = {.n_ctx = o.n_ctx, .n_batch = o.n_batch, .n_threads = o.n_threads,
                  .bos = tok_bos(x[0].tok), .max_chunks = o.max_chunks, .progress = progress,
                  .ud = &o.quiet};
    if (o.json) o.quiet = 1;
    if (imx) {
        av_model *im = NULL;
        eo.progress = progress_plain;
        const char *base = strrchr(o.text, '/');
        if (ev_imatrix(x[0].llm, ids, n_ids, &eo, base ? base + 1 : o.text, &im, &err) ||
            gguf_write(im, o.output, NULL, NULL, &err)) {
            av_model_free(im);
            goto fail;
        }
        if (!o.quiet) fprintf(stderr, "\n");
        printf("%s: %zu tensors from %d chunks of %d tokens\n", o.output, im->n_tensors,
               (int)(n_ids / (size_t)o.n_ctx), o.n_ctx);
        av_model_free(im);
        rc = 0;
    } else if (!cmp) {
        ev_ppl p;
        if (ev_perplexity(x[0].llm, ids, n_ids, &eo, &p, &err)) goto fail;
        if (o.json) {
            json_t *j = ppl_json(&p);
            json_object_set_new(j, "model", json_string(o.model[0]));
            json_object_set_new(j, "ctx", json_integer(o.n_ctx));
            json_dumpf(j, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
            putchar('\n');
            json_decref(j);
        } else {
            printf("Final estimate: PPL = %.4f +/- %.5f (%d chunks of %d, %lld scored tokens)\n",
                   p.ppl, p.ppl_stderr, p.n_chunks, o.n_ctx, (long long)p.n_scored);
        }
        rc = 0;
    } else {
        ev_compare c;
        if (ev_compare_models(x[0].llm, x[1].llm, ids, n_ids, &eo, &c, &err)) goto fail;
        int holds = o.gate ? gate_eval(o.gate, &c, msg, sizeof msg) : 1;
        if (o.json) {
            json_t *j = json_object();
            json_object_set_new(j, "base", ppl_json(&c.base));
            json_object_set_new(j, "test", ppl_json(&c.test));
            json_object_set_new(j, "ppl_ratio", json_real(c.ppl_ratio));
            json_object_set_new(j, "kld_mean", json_real(c.kld_mean));
            json_object_set_new(j, "kld_stderr", json_real(c.kld_stderr));
            json_object_set_new(j, "kld_median", json_real(c.kld_median));
            json_object_set_new(j, "kld_p99", json_real(c.kld_p99));
            json_object_set_new(j, "kld_max", json_real(c.kld_max));
            json_object_set_new(j, "top1", json_real(c.top1));
            json_object_set_new(j, "gate", o.gate ? json_string(o.gate) : json_null());
            json_object_set_new(j, "gate_ok", o.gate ? json_boolean(holds) : json_null());
            json_dumpf(j, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
            putchar('\n');
            json_decref(j);
        } else {
            printf("PPL base %.4f +/- %.5f, test %.4f +/- %.5f, ratio %.6f\n", c.base.ppl,
                   c.base.ppl_stderr, c.test.ppl, c.test.ppl_stderr, c.ppl_ratio);
            printf("KLD mean %.6f +/- %.6f, median %.6f, p99 %.6f, max %.6f\n", c.kld_mean,
                   c.kld_stderr, c.kld_median, c.kld_p99, c.kld_max);
            printf("same top token: %.3f %%\n", 100.0 * c.top1);
        }
        if (!holds) fprintf(stderr, "anvil eval: %s\n", msg);
        rc = holds ? 0 : EXIT_GATE;
    }
    if (fflush(stdout)) {
        fprintf(stderr, "anvil eval: cannot write the output\n");
        rc = 1;
    }
    goto out;
fail:
    fprintf(stderr, "anvil eval: %s\n", err.msg);
    rc = 1;
out:
    free(ids);
    free(text);
    for (int k = 0; k < 2; k++) av_loaded_release(&x[k]);
    return rc;
}
