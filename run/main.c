/* anvil run — generate text with a Llama-family model: prompt in, tokens
 * streamed to stdout, timings on stderr (or one JSON object with --json). */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>


#include "io.h"
#include "loader.h"
#include "progress.h"
#include "run.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: anvil run MODEL -p PROMPT [-n N] [-t THREADS] [-c CTX] [--seed S] [--json] [options]\n"
            "       anvil run MODEL --bench PP,TG [-r REPS] [-t THREADS] [--json]\n"
            "\n"
            "Generate text with a Llama-family model and stream it to stdout (the generated text only;\n"
            "a final newline is added when stdout is a terminal). Timings go to stderr.\n"
            "MODEL: a GGUF (architecture llama, f32/f16/bf16 weights), a llama2.c .bin (with --tokenizer)\n"
            "or an HF Llama folder (config.json + safetensors; tokenizer.json beside it or --tokenizer).\n"
            "\n"
            "  -p, --prompt TEXT        prompt (default empty: BOS only); special tokens like <s> are parsed\n"
            "  -f, --file FILE          read the prompt from FILE (one trailing newline dropped)\n"
            "  -n, --n-predict N        tokens to generate (default 128; -1 = until the context is full)\n"
            "  -c, --ctx-size N         context length (default 0 = max(model's context_length,\n"
            "                           prompt + N)); a longer prompt is an error\n"
            "  -b, --batch N            prompt tokens evaluated per batch (default 512)\n"
            "  -t, --threads N          threads (default 0 = auto: 1 for models under 4 MiB, else all cores)\n"
            "  --tokenizer FILE         vocabulary file instead of the model's own (required for llama2.c .bin)\n"
            "  --lora A.gguf[:SCALE]    LoRA adapter (llama.cpp GGUF layout) applied at run time: the\n"
            "                           weights stay as stored (quantized too); repeatable, they add up\n"
            "  --seed S                 sampler seed (default: random, shown in --json and the summary)\n"
            "sampling (llama.cpp's chain: bias -> penalties -> top-k -> top-p -> min-p -> temperature):\n"
            "  --temp T                 temperature (default 0.8; 0 = greedy)\n"
            "  --top-k K                keep the K most likely tokens (default 40; 0 = off)\n"
            "  --top-p P                nucleus sampling (default 0.95; 1 = off)\n"
            "  --min-p P                drop tokens below P x the top probability (default 0.05; 0 = off)\n"
            "  --repeat-penalty F       penalise repeated tokens (default 1 = off)\n"
            "  --repeat-last-n N        window of the penalties (default 64; 0 = off, -1 = all)\n"
            "  --frequency-penalty F    subtract F x count (default 0)\n"
            "  --presence-penalty F     subtract F once a token was seen (default 0)\n"
            "  --logit-bias ID=VALUE    add VALUE to token ID's logit; -inf bans it (repeatable)\n"
            "  --stop STRING            stop when STRING is generated; it is not printed (repeatable)\n"
            "  --ignore-eos             keep generating past the end-of-sequence token\n"
            "  --beams N                beam search with N beams instead of sampling (default 0 = off)\n"
            "  --length-penalty A       beam score = sum log p / length^A (default 1)\n"
            "output:\n"
            "  --json                   print one JSON object (prompt, ids, text, logprobs, stop reason, speeds)\n"
            "  -q, --quiet              no timing summary on stderr\n"
            "benchmark (like llama-bench -p PP -n TG):\n"
            "  --bench PP,TG            time a PP-token prompt batch and TG single-token steps from position 0\n"
            "  -r, --reps N             repetitions after one warm-up run (default 5)\n"
            "  -h, --help\n"
            "\n"
            "Stop reasons: eos, length (N reached), stop (a --stop string), context (context full).\n"
            "Exit codes: 0 ok, 1 failure, 2 usage error.\n");
}

#define USAGE_ERR(...)                                       \
    do {                                                     \
        fprintf(stderr, "anvil run: " __VA_ARGS__);          \
        fprintf(stderr, " (see anvil run --help)\n");        \
        rc = 2;                                              \
        goto out;                                            \
    } while (0)

static int parse_float(const char *s, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (!*s || *end || isnan(v) || (errno && !isinf(v))) return -1;
    *out = v;
    return 0;
}

static int parse_u64(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    if (!*s || *s == '-') return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || errno || v > INT64_MAX) return -1; /* JSON integers are signed */
    *out = v;
    return 0;
}

static char *read_file(const char *path, size_t *len, av_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        av_errf(err, AV_EIO, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap + 1);
    while (b) {
        if (n == cap) {
            char *nb = realloc(b, cap * 2 + 1);
            if (!nb) break;
            b = nb;
            cap *= 2;
        }
        size_t r = fread(b + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    if (!b || n == cap || ferror(f)) {
        av_errf(err, AV_EIO, "%s: cannot read the prompt file", path);
        free(b);
        fclose(f);
        return NULL;
    }
    fclose(f);
    if (n && b[n - 1] == '\n') n--; /* as llama.cpp's -f */
    b[n] = '\0';
    *len = n;
    return b;
}

/* A JSON string of n bytes; invalid UTF-8 (a generation cut inside a
 * multi-byte character, say) is replaced by U+FFFD. */
static json_t *json_text(const char *s, size_t n) {
    json_t *j = json_stringn(s, n);
    if (j) return j;
    run_buf b = {0};
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        json_t *t = len && i + len <= n ? json_stringn(s + i, len) : NULL;
        if (t) {
            json_decref(t);
            run_buf_add(&b, s + i, len);
            i += len;
        } else {
            run_buf_add(&b, "\xEF\xBF\xBD", 3);
            i++;
        }
    }
    j = json_stringn(b.s ? b.s : "", b.n);
    free(b.s);
    return j ? j : json_null();
}

static json_t *json_ids(const int32_t *ids, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_integer(ids[i]));
    return a;
}

static double per_s(int n, double s) { return n > 0 && s > 0 ? n / s : 0; }

static void print_summary(const run_opts *o, double load_ms, int n_prompt, const run_result *r,
                          double total_s) {
    fprintf(stderr, "anvil run: load time        = %10.2f ms\n", load_ms);
    fprintf(stderr,
            "anvil run: prompt eval time = %10.2f ms / %5d tokens (%8.2f ms per token, %9.2f tokens per second)\n",
            r->prompt_s * 1e3, n_prompt, n_prompt ? r->prompt_s * 1e3 / n_prompt : 0,
            per_s(n_prompt, r->prompt_s));
    fprintf(stderr,
            "anvil run: generation time  = %10.2f ms / %5d tokens (%8.2f ms per token, %9.2f tokens per second)\n",
            r->gen_s * 1e3, r->n, r->n ? r->gen_s * 1e3 / r->n : 0, per_s(r->n, r->gen_s));
    fprintf(stderr, "anvil run: total time       = %10.2f ms, stop: %s, seed %llu, %d threads\n",
            total_s * 1e3, r->stop_reason, (unsigned long long)o->seed, o->n_threads);
}

static uint64_t random_seed(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t s = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    smp_rng r;
    smp_rng_seed(&r, s);
    return smp_rng_next(&r) >> 1; /* keep it printable as a JSON integer */
}

int main(int argc, char **argv) {
    run_opts o = {0};
    smp_params_default(&o.sp);
    o.n_predict = 128;
    o.n_batch = 512;
    o.reps = 5;
    o.length_penalty = 1.0f;
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    o.n_threads = 0; /* auto: decided once the model's size is known */
    const char *prompt_file = NULL;
    char *prompt_buf = NULL;
    int rc = 0;
    av_model *m = NULL;
    llm *l = NULL;
    tok *t = NULL;
    int32_t *pids = NULL;
    size_t n_pids = 0;
    run_result res = {0};
    av_err err = {0};
    o.bias = calloc((size_t)argc, sizeof *o.bias);
    o.stops = calloc((size_t)argc, sizeof *o.stops);
    if (!o.bias || !o.stops) {
        fprintf(stderr, "anvil run: out of memory\n");
        rc = 1;
        goto out;
    }

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); goto out; }
        if (!strcmp(a, "--json")) { o.json = 1; continue; }
        if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) { o.quiet = 1; continue; }
        if (!strcmp(a, "--ignore-eos")) { o.ignore_eos = 1; continue; }
        if (a[0] != '-' || !a[1]) {
            if (o.model) USAGE_ERR("unexpected argument '%s'", a);
            o.model = a;
            continue;
        }
        /* every other option takes a value: "--opt VALUE" or "--opt=VALUE" */
        char name[64];
        const char *eq = a[1] == '-' ? strchr(a, '=') : NULL;
        if (eq) {
            snprintf(name, sizeof name, "%.*s", (int)(eq - a), a);
            v = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", a);
        }
        static const char *const with_value[] = {
            "-p", "--prompt", "-f", "--file", "-n", "--n-predict", "-c", "--ctx-size", "-b", "--batch",
            "-t", "--threads", "--tokenizer", "--seed", "--temp", "--top-k", "--top-p", "--min-p",
            "--repeat-penalty", "--repeat-last-n", "--frequency-penalty", "--presence-penalty",
            "--logit-bias", "--stop", "--beams", "--length-penalty", "--bench", "-r", "--reps", "--lora", NULL};
        int known = 0;
        for (int k = 0; with_value[k]; k++) known |= !strcmp(with_value[k], name);
        if (!known) USAGE_ERR("unknown option '%s'", a);
        if (!v) {
            if (i + 1 >= argc) USAGE_ERR("%s needs a value", name);
            v = argv[++i];
        }
        const char *n = name;
        float fv;
        if (!strcmp(n, "-p") || !strcmp(n, "--prompt")) { o.prompt = v; o.prompt_len = strlen(v); }
        else if (!strcmp(n, "-f") || !strcmp(n, "--file")) prompt_file = v;
        else if (!strcmp(n, "--tokenizer")) o.tokenizer = v;
        else if (!strcmp(n, "--lora")) {
            if (o.n_lora >= 16) USAGE_ERR("at most 16 --lora adapters");
            o.lora[o.n_lora++] = v;
        }
        else if (!strcmp(n, "-n") || !strcmp(n, "--n-predict")) {
            if (av_parse_int(v, -1, 1 << 24, &o.n_predict)) USAGE_ERR("-n '%s' is not an integer >= -1", v);
        } else if (!strcmp(n, "-c") || !strcmp(n, "--ctx-size")) {
            if (av_parse_int(v, 0, 1 << 24, &o.n_ctx)) USAGE_ERR("-c '%s' is not an integer >= 0", v);
        } else if (!strcmp(n, "-b") || !strcmp(n, "--batch")) {
            if (av_parse_int(v, 1, 1 << 24, &o.n_batch)) USAGE_ERR("-b '%s' is not a positive integer", v);
        } else if (!strcmp(n, "-t") || !strcmp(n, "--threads")) {
            if (av_parse_int(v, 0, 4096, &o.n_threads)) USAGE_ERR("-t '%s' is not a thread count (0 = auto)", v);
        } else if (!strcmp(n, "-r") || !strcmp(n, "--reps")) {
            if (av_parse_int(v, 1, 1000000, &o.reps)) USAGE_ERR("-r '%s' is not a positive integer", v);
        } else if (!strcmp(n, "--seed")) {
            if (parse_u64(v, &o.seed)) USAGE_ERR("--seed '%s' is not an integer in [0, 2^63)", v);
            o.has_seed = 1;
        } else if (!strcmp(n, "--temp")) {
            if (parse_float(v, &o.sp.temp)) USAGE_ERR("--temp '%s' is not a number", v);
        } else if (!strcmp(n, "--top-k")) {
            if (av_parse_int(v, 0, 1 << 30, &o.sp.top_k)) USAGE_ERR("--top-k '%s' is not an integer >= 0", v);
        } else if (!strcmp(n, "--top-p")) {
            if (parse_float(v, &o.sp.top_p) || o.sp.top_p < 0) USAGE_ERR("--top-p '%s' is not a number >= 0", v);
        } else if (!strcmp(n, "--min-p")) {
            if (parse_float(v, &o.sp.min_p) || o.sp.min_p < 0 || o.sp.min_p > 1) USAGE_ERR("--min-p '%s' is not in [0, 1]", v);
        } else if (!strcmp(n, "--repeat-penalty")) {
            if (parse_float(v, &o.sp.repeat_penalty) || !(o.sp.repeat_penalty > 0) || isinf(o.sp.repeat_penalty))
                USAGE_ERR("--repeat-penalty '%s' is not a positive number", v);
        } else if (!strcmp(n, "--repeat-last-n")) {
            if (av_parse_int(v, -1, 1 << 24, &o.sp.repeat_last_n)) USAGE_ERR("--repeat-last-n '%s' is not an integer >= -1", v);
        } else if (!strcmp(n, "--frequency-penalty")) {
            if (parse_float(v, &o.sp.freq_penalty) || isinf(o.sp.freq_penalty)) USAGE_ERR("--frequency-penalty '%s' is not a number", v);
        } else if (!strcmp(n, "--presence-penalty")) {
            if (parse_float(v, &o.sp.presence_penalty) || isinf(o.sp.presence_penalty)) USAGE_ERR("--presence-penalty '%s' is not a number", v);
        } else if (!strcmp(n, "--length-penalty")) {
            if (parse_float(v, &o.length_penalty) || isinf(o.length_penalty)) USAGE_ERR("--length-penalty '%s' is not a number", v);
        } else if (!strcmp(n, "--beams")) {
            if (av_parse_int(v, 0, 1024, &o.beams)) USAGE_ERR("--beams '%s' is not an integer in [0, 1024]", v);
        } else if (!strcmp(n, "--stop")) {
            if (!*v) USAGE_ERR("--stop needs a non-empty string");
            o.stops[o.n_stops++] = v;
        } else if (!strcmp(n, "--logit-bias")) {
            const char *e = strchr(v, '=');
            char idb[32];
            int id;
            if (!e || e == v || (size_t)(e - v) >= sizeof idb) USAGE_ERR("--logit-bias '%s' is not ID=VALUE", v);
            snprintf(idb, sizeof idb, "%.*s", (int)(e - v), v);
            if (av_parse_int(idb, 0, INT32_MAX, &id) || parse_float(e + 1, &fv) || fv == INFINITY)
                USAGE_ERR("--logit-bias '%s' is not ID=VALUE (VALUE a number or -inf)", v);
            o.bias[o.n_bias++] = (smp_bias){id, fv};
        } else if (!strcmp(n, "--bench")) {
            char *c = strchr(v, ',');
            char pb[32];
            if (!c || (size_t)(c - v) >= sizeof pb) USAGE_ERR("--bench '%s' is not PP,TG", v);
            snprintf(pb, sizeof pb, "%.*s", (int)(c - v), v);
            if (av_parse_int(pb, 0, 1 << 20, &o.bench_pp) || av_parse_int(c + 1, 0, 1 << 20, &o.bench_tg) ||
                o.bench_pp + o.bench_tg == 0)
                USAGE_ERR("--bench '%s' is not PP,TG (non-negative integers, not both 0)", v);
            o.bench = 1;
        }
    }
    if (!o.model) USAGE_ERR("no MODEL given");
    if (o.prompt && prompt_file) USAGE_ERR("give -p or -f, not both");
    if (o.bench && (o.prompt || prompt_file)) USAGE_ERR("--bench takes no prompt");
    av_format fmt = av_detect_format(o.model);
    if (fmt == AV_FMT_LLAMA2C && !o.tokenizer && !o.bench)
        USAGE_ERR("%s: llama2.c checkpoints carry no vocabulary; pass --tokenizer tokenizer.bin", o.model);
    if (!o.has_seed) o.seed = random_seed();

    if (prompt_file) {
        if (!(prompt_buf = read_file(prompt_file, &o.prompt_len, &err))) goto fail;
        o.prompt = prompt_buf;
    }
    if (!o.prompt) o.prompt = "";

    /* ---- load ---- */
    double t0 = av_now();
    av_loaded ld;
    if ((rc = av_load_lora(o.model, o.tokenizer, !o.bench, o.lora, o.n_lora, &ld, &err))) goto fail;
    m = ld.model;
    l = ld.llm;
    t = ld.tok;
    /* auto threads: a token of a model under 4 MiB takes ~0.1 ms on one core,
     * less than waking and syncing a second one between sampled tokens costs */
    if (o.n_threads == 0) o.n_threads = l->weight_bytes < (4 << 20) || nc < 1 ? 1 : (int)nc;
    if (o.bench) {
        rc = run_bench(&o, l, (av_now() - t0) * 1e3);
        goto out;
    }
    double load_ms = (av_now() - t0) * 1e3;

    /* ---- prompt and context ---- */
    tok_opts to = {.add_special = 1, .parse_special = 1};
    if ((rc = tok_encode(t, o.prompt, o.prompt_len, &to, &pids, &n_pids, &err))) goto fail;
    if (n_pids == 0) {
        av_errf(&err, AV_EINVAL, "%s: the prompt is empty and the vocabulary adds no BOS token", o.model);
        goto fail;
    }
    if (n_pids > (1 << 24)) {
        av_errf(&err, AV_EINVAL, "%s: prompt has %zu tokens, more than any context", o.model, n_pids);
        goto fail;
    }
    const int n_prompt = (int)n_pids, V = l->hp.n_vocab;
    for (int i = 0; i < o.n_bias; i++)
        if (o.bias[i].id >= V) {
            av_errf(&err, AV_EINVAL, "%s: --logit-bias token %d is outside the vocabulary (%d tokens)",
                    o.model, o.bias[i].id, V);
            goto fail;
        }
    int n_ctx = o.n_ctx;
    if (n_ctx == 0) {
        long need = (long)n_prompt + (o.n_predict > 0 ? o.n_predict : 0);
        n_ctx = l->hp.n_ctx_train;
        if (need > n_ctx) n_ctx = need > (1 << 24) ? (1 << 24) : (int)need;
    }
    if (n_prompt > n_ctx) {
        av_errf(&err, AV_EINVAL, "%s: prompt has %d tokens but the context is %d (raise -c)", o.model,
                n_prompt, n_ctx);
        goto fail;
    }

    /* ---- generate ---- */
    if ((rc = run_generate(&o, l, t, pids, n_prompt, n_ctx, o.json ? NULL : stdout, &res, &err))) {
        av_err_prefix(&err, o.model);
        goto fail;
    }
    double total_s = av_now() - t0;
    if (o.json) {
        json_t *j = json_object(), *lp = json_array();
        for (int i = 0; i < res.n; i++)
            json_array_append_new(lp, isfinite(res.logprobs[i]) ? json_real(res.logprobs[i]) : json_null());
        json_object_set_new(j, "model", json_text(o.model, strlen(o.model)));
        json_object_set_new(j, "prompt", json_text(o.prompt, o.prompt_len));
        json_object_set_new(j, "prompt_ids", json_ids(pids, n_prompt));
        json_object_set_new(j, "text", json_text(res.text.s ? res.text.s : "", res.text.n));
        json_object_set_new(j, "ids", json_ids(res.ids, res.n));
        json_object_set_new(j, "logprobs", lp);
        json_object_set_new(j, "stop_reason", json_string(res.stop_reason));
        json_object_set_new(j, "n_prompt", json_integer(n_prompt));
        json_object_set_new(j, "n_generated", json_integer(res.n));
        json_object_set_new(j, "n_ctx", json_integer(n_ctx));
        json_object_set_new(j, "n_threads", json_integer(o.n_threads));
        json_object_set_new(j, "seed", json_integer((json_int_t)o.seed));
        json_object_set_new(j, "prompt_tokens_per_s", json_real(per_s(n_prompt, res.prompt_s)));
        json_object_set_new(j, "gen_tokens_per_s", json_real(per_s(res.n, res.gen_s)));
        json_object_set_new(j, "load_ms", json_real(load_ms));
        json_dumpf(j, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
        putchar('\n');
        json_decref(j);
    } else if (isatty(STDOUT_FILENO)) {
        putchar('\n');
    }
    if (fflush(stdout)) {
        fprintf(stderr, "anvil run: cannot write the output\n");
        rc = 1;
        goto out;
    }
    if (!o.quiet) print_summary(&o, load_ms, n_prompt, &res, total_s);
    rc = 0;
    goto out;
fail:
    fflush(stdout);
    fprintf(stderr, "anvil run: %s\n", err.msg);
    rc = 1;
out:
    run_result_release(&res);
    free(pids);
    tok_free(t);
    llm_free(l);
    av_model_free(m);
    free(prompt_buf);
    free(o.bias);
    free(o.stops);
    return rc;
}
