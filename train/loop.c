/* anvil train — the pretraining loop: settings -> data -> model -> steps
 * (metrics, validation, checkpoints, signals) -> GGUF + HF export. */
#include "loop.h"

#include <cblas.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt.h"
#include "gguf.h"
#include "hf.h"
#include "io.h"
#include "loader.h"
#include "lora.h"
#include "opts.h"
#include "progress.h"
#include "sample.h"
#include "shard.h"
#include "tokenizer.h"
#include "train.h"

#define PFX "anvil train"

/* The one piece of process state: which signal asked us to stop (set by the
 * handler, read between steps). */
static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { g_stop = sig; }

typedef struct run {
    train_opts o;
    int nt;
    tr_model *m;
    shard *train, *val;
    shard_loader *loader;
    tok *tok;
    char *ckpt_path, *metrics_path, *gguf_path, *hf_path, *adapter_path;
    av_loaded base; /* LoRA: the frozen base (its mmap backs the model's weights) */
    char *lora_json; /* LoRA: settings + base for the checkpoint */
    FILE *metrics;
    int step;        /* optimizer steps done */
    uint64_t tokens; /* training tokens consumed */
    double peak_gflops, flops_per_token;
    int32_t *in, *tg; /* [batch, seq] */
    double t_timed;   /* --bench: when the timed steps began, and tokens by then */
    uint64_t tok_timed;
    char *settings;
    av_err err;
} run;

/* ---- measurements ----------------------------------------------------- */

/* The machine's sgemm GFLOP/s at nt threads, the larger of: nt threads each
 * running single-threaded cblas_sgemm on its own matrices (how the training
 * core uses OpenBLAS), and one sgemm on nt OpenBLAS threads. Best of 5 after
 * a warm-up; pages touched before timing. Leaves OpenBLAS at 1 thread. */
static double sgemm_peak(int nt) {
    enum { N = 1536 };
    const size_t nn = (size_t)N * N;
    float *buf = malloc(3 * nn * sizeof(float) * (size_t)nt);
    if (!buf) return 0;
    for (size_t i = 0; i < 3 * nn * (size_t)nt; i++) buf[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
    const double flop = 2.0 * N * N * N;
    double best = 0;
    openblas_set_num_threads(1);
    for (int rep = 0; rep < 6; rep++) {
        double t0 = av_now();
        #pragma omp parallel num_threads(nt)
        {
            float *a = buf + 3 * nn * (size_t)omp_get_thread_num();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, N, N, 1.0f, a, N, a + nn, N, 0.0f, a + 2 * nn, N);
        }
        double g = flop * nt / (av_now() - t0) / 1e9;
        if (rep && g > best) best = g;
    }
    if (nt > 1) {
        openblas_set_num_threads(nt);
        for (int rep = 0; rep < 6; rep++) {
            double t0 = av_now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, N, N, 1.0f, buf, N, buf + nn, N, 0.0f,
                        buf + 2 * nn, N);
            double g = flop / (av_now() - t0) / 1e9;
            if (rep && g > best) best = g;
        }
        openblas_set_num_threads(1);
    }
    free(buf);
    return best;
}

/* 6*N + 12*L*dim*T (PaLM appendix B); N counts matmul parameters, the head
 * included. LoRA: 4*N_base (forward, and input gradients only) + 6*N_lora. */
static double flops_per_token(const tr_model *m) {
    const tr_config *c = &m->cfg;
    if (m->lora) {
        const double E = c->dim, F = c->ffn;
        const double base = c->n_layer * (2 * E * m->q_dim + 2 * E * m->kv_dim + 3 * E * F) + (double)c->vocab * E;
        return 4 * base + 6 * (double)m->n_params + 12.0 * c->n_layer * c->dim * c->seq_len;
    }
    double n = 0;
    for (int i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].n_dims == 2 && (i != m->t_embd || m->cfg.tied)) n += (double)m->tensors[i].n;
    return 6 * n + 12.0 * m->cfg.n_layer * m->cfg.dim * m->cfg.seq_len;
}

/* ---- setup ------------------------------------------------------------ */

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* meta.json of the data dir: the tokenizer path and vocabulary hash. */
static int open_data(run *r) {
    const train_opts *o = &r->o;
    char *tp = join(o->data, "train.bin"), *vp = join(o->data, "val.bin"), *mp = join(o->data, "meta.json");
    json_t *meta = NULL;
    int rc = AV_ENOMEM;
    if (!tp || !vp || !mp) goto done;
    if ((rc = shard_open(tp, &r->train, &r->err))) goto done;
    if (file_exists(vp) && (rc = shard_open(vp, &r->val, &r->err))) goto done;
    json_error_t je;
    meta = json_load_file(mp, 0, &je);
    const char *tok_path = o->tokenizer, *hash = NULL;
    if (!meta && !tok_path) {
        rc = av_errf(&r->err, AV_EIO, "%s: %s (or pass --tokenizer)", mp, je.text);
        goto done;
    }
    if (meta && json_unpack(meta, "{s:{s?s, s?s}}", "tokenizer", "path", tok_path ? NULL : &tok_path,
                            "vocab_hash", &hash)) {
        rc = av_errf(&r->err, AV_EFORMAT, "%s: no \"tokenizer\" object", mp);
        goto done;
    }
    if (!tok_path) { rc = av_errf(&r->err, AV_EFORMAT, "%s: no tokenizer path; pass --tokenizer", mp); goto done; }
    if ((rc = tok_load(tok_path, &r->tok, &r->err))) goto done;
    char h[32];
    snprintf(h, sizeof h, "%016" PRIx64, shard_vocab_hash(r->tok));
    if (hash && strcmp(hash, h)) {
        rc = av_errf(&r->err, AV_EINVAL, "%s: vocabulary hash %s differs from the dataset's %s (%s)", tok_path, h,
                     hash, mp);
        goto done;
    }
    if ((int64_t)shard_vocab(r->train) > tok_n_vocab(r->tok)) {
        rc = av_errf(&r->err, AV_EINVAL, "%s: dataset vocabulary %u is larger than the tokenizer's %d", tp,
                     shard_vocab(r->train), tok_n_vocab(r->tok));
        goto done;
    }
    rc = 0;
done:
    json_decref(meta);
    free(tp); free(vp); free(mp);
    return rc;
}

/* LoRA: the base (--init, or the checkpoint's), checked against the
 * checkpoint's fingerprint when resuming; the adapter model over it. */
static int build_lora(run *r) {
    train_opts *o = &r->o;
    tr_lora_config lc = { .r = o->lora_r ? o->lora_r : 8, .alpha = (float)(o->lora_alpha > 0 ? o->lora_alpha : 16),
                          .dropout = (float)o->lora_dropout };
    const char *targets = o->lora_targets ? o->lora_targets : "all", *base_path = o->init;
    char *meta = NULL, fp[32] = "";
    json_t *j = NULL;
    int rc = 0;
    if (o->resume) {
        if ((rc = ckpt_lora_meta(r->ckpt_path, &meta, &r->err))) return rc;
        if (!meta) return av_errf(&r->err, AV_EINVAL, "%s is a full-model checkpoint; resume it without --lora", r->ckpt_path);
        json_error_t je;
        const char *t = NULL, *b = NULL, *f = NULL;
        double alpha = 0, drop = 0;
        j = json_loads(meta, 0, &je);
        if (!j || json_unpack(j, "{s:i, s:F, s:F, s:s, s:s, s:s}", "r", &lc.r, "alpha", &alpha, "dropout", &drop,
                              "targets", &t, "base", &b, "base_fingerprint", &f)) {
            rc = av_errf(&r->err, AV_EFORMAT, "%s: metadata \"lora\" is malformed", r->ckpt_path);
            goto done;
        }
        unsigned given = 0, stored = 0; /* targets compared as sets: "all" and HF names spell the same */
        if ((o->lora_targets && (rc = tr_lora_parse_targets(o->lora_targets, &given, &r->err))) ||
            (rc = tr_lora_parse_targets(t, &stored, &r->err)))
            goto done;
        if ((o->lora_r && o->lora_r != lc.r) || (o->lora_alpha > 0 && (float)o->lora_alpha != (float)alpha) ||
            (o->lora_targets && given != stored)) {
            rc = av_errf(&r->err, AV_EINVAL, "--lora-r/--lora-alpha/--lora-targets contradict %s (r %d, alpha %g, %s)",
                         r->ckpt_path, lc.r, alpha, t);
            goto done;
        }
        lc.alpha = (float)alpha;
        lc.dropout = (float)drop;
        targets = t;
        if (!base_path) base_path = b;
        snprintf(fp, sizeof fp, "%s", f);
    }
    if ((rc = tr_lora_parse_targets(targets, &lc.targets, &r->err))) goto done;
    if ((rc = av_load(base_path, NULL, 0, &r->base, &r->err))) goto done;
    char got[32];
    snprintf(got, sizeof got, "%016" PRIx64, tr_lora_fingerprint(r->base.model));
    if (fp[0] && strcmp(fp, got)) {
        rc = av_errf(&r->err, AV_EINVAL, "%s: not the base %s was trained on (fingerprint %s, expected %s)", base_path,
                     r->ckpt_path, got, fp);
        goto done;
    }
    if ((rc = tr_lora_new(r->base.model, base_path, &lc, o->resume ? 0 : o->seq, &r->m, &r->err))) goto done;
    if (o->resume) {
        ckpt_state s;
        if ((rc = ckpt_load(r->ckpt_path, &r->m, &s, &r->err))) goto done;
        free((void *)s.settings);
        free((void *)s.lora);
        r->step = s.step;
        r->tokens = s.tokens;
        if (r->loader && (rc = shard_loader_load(r->loader, s.loader, s.loader_n, &r->err))) {
            av_err_prefix(&r->err, r->ckpt_path);
            goto done;
        }
    } else {
        tr_lora_init(r->m, (uint64_t)o->seed);
    }
    char tl[160], *abs = realpath(base_path, NULL);
    tr_lora_targets_str(lc.targets, tl, sizeof tl);
    json_t *lj = json_pack("{s:i, s:f, s:f, s:s, s:s, s:s}", "r", lc.r, "alpha", (double)lc.alpha, "dropout",
                           (double)lc.dropout, "targets", tl, "base", abs ? abs : base_path, "base_fingerprint", got);
    free(abs);
    r->lora_json = lj ? json_dumps(lj, JSON_COMPACT) : NULL;
    json_decref(lj);
    if (!r->lora_json) rc = av_errf(&r->err, AV_ENOMEM, "out of memory");
done:
    json_decref(j);
    free(meta);
    return rc;
}

static int build_model(run *r) {
    train_opts *o = &r->o;
    int rc;
    if (o->lora) {
        if ((rc = build_lora(r))) return rc;
    } else if (o->resume) {
        ckpt_state s;
        if ((rc = ckpt_load(r->ckpt_path, &r->m, &s, &r->err))) return rc;
        free((void *)s.settings);
        free((void *)s.lora);
        r->step = s.step;
        r->tokens = s.tokens;
        if (r->loader && (rc = shard_loader_load(r->loader, s.loader, s.loader_n, &r->err)))
            return av_err_prefix(&r->err, r->ckpt_path), rc;
    } else if (o->init) {
        av_loaded L;
        if ((rc = av_load(o->init, NULL, 0, &L, &r->err))) return rc;
        rc = tr_model_from_model(L.model, o->init, &r->m, &r->err);
        av_loaded_release(&L);
        if (rc) return rc;
        if (o->seq) r->m->cfg.seq_len = o->seq; /* the window may differ from the source's context */
    } else {
        tr_config c = { .dim = o->dim ? o->dim : 256, .n_layer = o->layers ? o->layers : 4,
                        .n_head = o->heads ? o->heads : 8, .ffn = o->ffn ? o->ffn : 768,
                        .seq_len = o->seq ? o->seq : 128, .tied = !o->untied, .rope_base = (float)o->rope_base,
                        .eps = 1e-5f };
        c.n_kv_head = o->kv_heads ? o->kv_heads : c.n_head;
        c.vocab = o->vocab ? o->vocab : r->tok ? tok_n_vocab(r->tok) : 0;
        if ((rc = tr_model_new(&c, &r->m, &r->err))) return rc;
        tr_init_weights(r->m, (uint64_t)o->seed);
    }
    if (o->no_decay_embedding && !o->lora) r->m->tensors[r->m->t_embd].decay = 0;
    r->m->dropout = (float)o->dropout;
    r->m->recompute = o->recompute;
    return 0;
}

/* Flags that contradict a model taken from --init or the checkpoint. */
static int check_model_flags(run *r) {
    const train_opts *o = &r->o;
    const tr_config *c = &r->m->cfg;
    const char *src = o->resume ? r->ckpt_path : o->init;
    if (!src) return 0;
    const int seq_fixed = !(o->lora && !o->resume); /* a LoRA window may differ from the base's context */
    const struct { const char *flag; int given, have; } f[] = {
        { "--dim", o->dim, c->dim }, { "--layers", o->layers, c->n_layer }, { "--heads", o->heads, c->n_head },
        { "--kv-heads", o->kv_heads, c->n_kv_head }, { "--ffn", o->ffn, c->ffn }, { "--vocab", o->vocab, c->vocab },
        { "--seq", seq_fixed ? o->seq : 0, c->seq_len },
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].given && f[i].given != f[i].have)
            return av_errf(&r->err, AV_EINVAL, "%s %d contradicts %s (%d)", f[i].flag, f[i].given, src, f[i].have);
    return 0;
}

/* Everything that can be checked before a step runs. Usage-type problems
 * (sizes that do not fit) come back as AV_EINVAL. */
static int validate(run *r) {
    const train_opts *o = &r->o;
    if (!o->bench && !o->data) return av_errf(&r->err, AV_EINVAL, "--data DIR is required (or --bench)");
    if (o->bench && !o->vocab && !o->init) return av_errf(&r->err, AV_EINVAL, "--bench needs --vocab N");
    if (o->resume && o->init && !o->lora)
        return av_errf(&r->err, AV_EINVAL, "--resume and --init exclude each other (except for --lora: the base)");
    if (o->lora && !o->init && !o->resume) return av_errf(&r->err, AV_EINVAL, "--lora needs --init BASE");
    if (!o->lora && (o->lora_r || o->lora_alpha > 0 || o->lora_targets || o->lora_dropout > 0 || o->adapter_out))
        return av_errf(&r->err, AV_EINVAL, "--lora-* and --adapter-out need --lora");
    if (o->lora && (o->dim || o->layers || o->heads || o->kv_heads || o->ffn || o->untied))
        return av_errf(&r->err, AV_EINVAL, "--lora takes the architecture from the base; drop --dim/--layers/--heads/"
                       "--kv-heads/--ffn/--untied");
    if (o->lora_targets) {
        unsigned mask;
        if (tr_lora_parse_targets(o->lora_targets, &mask, &r->err)) return AV_EINVAL;
    }
    if (!o->init && !o->resume) {
        int dim = o->dim ? o->dim : 256, heads = o->heads ? o->heads : 8;
        int kvh = o->kv_heads ? o->kv_heads : heads;
        if (dim % heads) return av_errf(&r->err, AV_EINVAL, "--dim %d is not divisible by --heads %d", dim, heads);
        if (heads % kvh) return av_errf(&r->err, AV_EINVAL, "--kv-heads %d does not divide --heads %d", kvh, heads);
        if ((dim / heads) % 2)
            return av_errf(&r->err, AV_EINVAL, "head size %d (dim/heads) must be even for RoPE", dim / heads);
    }
    if (o->min_lr > o->lr) return av_errf(&r->err, AV_EINVAL, "--min-lr %g exceeds --lr %g", o->min_lr, o->lr);
    return 0;
}

/* ---- metrics, progress ------------------------------------------------ */

static void fmt_secs(char *b, size_t n, double s) {
    if (s < 0 || !isfinite(s)) snprintf(b, n, "?");
    else if (s < 60) snprintf(b, n, "%.0fs", s);
    else if (s < 3600) snprintf(b, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(b, n, "%dh%02dm", (int)s / 3600, (int)s % 3600 / 60);
}

static void progress(const run *r, int tty, double loss, double lr, double tps, double mfu, double elapsed,
                     int start) {
    const train_opts *o = &r->o;
    char eta[32];
    int done = r->step - start, left = o->steps - r->step;
    fmt_secs(eta, sizeof eta, done ? elapsed / done * left : -1);
    if (tty) {
        char bar[26];
        int fill = (int)(25.0 * r->step / o->steps);
        for (int i = 0; i < 25; i++) bar[i] = i < fill ? '=' : ' ';
        bar[25] = 0;
        fprintf(stderr, "\r\033[Kstep %d/%d [%s] loss %.4f lr %.2e %.0f tok/s MFU %.0f%% ETA %s", r->step, o->steps,
                bar, loss, lr, tps, 100 * mfu, eta);
    } else {
        fprintf(stderr, "step %d/%d loss %.4f lr %.2e %.0f tok/s MFU %.1f%% ETA %s\n", r->step, o->steps, loss, lr,
                tps, 100 * mfu, eta);
    }
    fflush(stderr);
}

/* Mean loss over eval_batches batches of the val shard, the same windows at
 * every evaluation (own loader, fixed seed). */
static int validate_loss(run *r, double *out) {
    shard_loader *vl = NULL;
    int rc = shard_loader_new(r->val, (uint64_t)r->o.seed ^ 0x76616cull, &vl, &r->err);
    if (rc) return rc;
    r->m->eval = 1; /* the whole network: no dropout */
    double sum = 0;
    for (int b = 0; b < r->o.eval_batches; b++) {
        float loss;
        if ((rc = shard_next_batch(vl, r->o.batch, r->m->cfg.seq_len, r->in, r->tg, &r->err)) ||
            (rc = tr_forward(r->m, r->in, r->tg, r->o.batch, r->m->cfg.seq_len, &loss, NULL, r->nt, &r->err)))
            break;
        sum += loss;
    }
    shard_loader_free(vl);
    r->m->eval = 0;
    *out = sum / r->o.eval_batches;
    return rc;
}

/* On --resume: keep the metrics lines up to the checkpoint's step (the
 * steps after it are run again), atomically. */
static int trim_metrics(run *r) {
    char *text = NULL;
    size_t len = 0;
    if (!file_exists(r->metrics_path)) return 0;
    int rc = av_read_file(r->metrics_path, (size_t)1 << 31, &text, &len, &r->err);
    if (rc) return rc;
    av_out *out = NULL;
    if ((rc = av_out_open(r->metrics_path, &out, &r->err))) goto done;
    for (char *line = text, *nl; line < text + len; line = nl + 1) {
        nl = memchr(line, '\n', (size_t)(text + len - line));
        if (!nl) break; /* a torn last line (killed mid-write) is dropped */
        const char *sp = strstr(line, "\"step\":");
        long step = sp && sp < nl ? strtol(sp + 7, NULL, 10) : 0;
        if (step <= r->step && (rc = av_out_write(out, line, (size_t)(nl - line + 1), &r->err))) goto done;
    }
    rc = av_out_commit(out, &r->err);
    out = NULL;
done:
    av_out_abort(out);
    free(text);
    return rc;
}

static int save(run *r) {
    ckpt_state s = { .step = r->step, .tokens = r->tokens, .settings = r->settings, .lora = r->lora_json };
    if (r->loader) {
        s.loader_n = shard_loader_state_size();
        shard_loader_save(r->loader, s.loader);
    }
    if (r->metrics && fflush(r->metrics)) return av_errf(&r->err, AV_EIO, "%s: write failed", r->metrics_path);
    return ckpt_save(r->ckpt_path, r->m, &s, &r->err);
}

static int all_finite(const float *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(p[i])) return 0;
    return 1;
}

/* ---- export ----------------------------------------------------------- */

static int export_models(run *r) {
    av_kvs kv;
    av_kvs_init(&kv);
    av_model *gm = NULL;
    int rc = av_kvs_set_str(&kv, "general.name", "anvil-train") ? AV_ENOMEM : 0;
    if (!rc && r->tok) rc = tok_to_kv(r->tok, &kv, &r->err);
    if (!rc) rc = tr_model_to_model(r->m, &kv, &gm, &r->err);
    if (!rc) rc = gguf_write(gm, r->gguf_path, NULL, NULL, &r->err);
    if (!rc && !r->o.no_hf) {
        if (file_exists(r->hf_path)) { /* our own previous export (a resumed, longer run) */
            static const char *const files[] = { "config.json", "model.safetensors", "tokenizer.json" };
            for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
                char f[4200];
                snprintf(f, sizeof f, "%s/%s", r->hf_path, files[i]);
                unlink(f);
            }
            if (rmdir(r->hf_path))
                rc = av_errf(&r->err, AV_EIO, "%s: cannot replace the previous export: %s", r->hf_path, strerror(errno));
        }
        if (!rc) rc = hf_gguf_to_hf(gm, NULL, &r->err);
        if (!rc) rc = hf_write_folder(gm, r->hf_path, NULL, NULL, NULL, &r->err);
    }
    if (rc == AV_ENOMEM && !r->err.msg[0]) av_errf(&r->err, rc, "out of memory exporting");
    av_model_free(gm);
    av_kvs_release(&kv);
    return rc;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* LoRA: OUT/adapter.gguf, and --adapter-out as GGUF (.gguf) or a PEFT folder. */
static int export_adapter(run *r) {
    av_model *ad = NULL;
    lora_adapter *la = NULL;
    const char *x = r->o.adapter_out;
    int rc = tr_lora_to_adapter(r->m, &ad, &r->err);
    if (!rc) rc = gguf_write(ad, r->adapter_path, NULL, NULL, &r->err);
    if (!rc && x && ends_with(x, ".gguf")) rc = gguf_write(ad, x, NULL, NULL, &r->err);
    else if (!rc && x) {
        if (!(rc = lora_read(r->adapter_path, &la, &r->err)))
            rc = lora_peft_write(la, x, r->m->cfg.n_head, r->m->cfg.n_kv_head, &r->err);
    }
    lora_free(la);
    av_model_free(ad);
    return rc;
}

/* ---- the loop --------------------------------------------------------- */

static int train_steps(run *r, int *stopped) {
    train_opts *o = &r->o;
    const int B = o->batch, T = r->m->cfg.seq_len;
    tr_schedule sch = { (float)o->lr, (float)(o->min_lr >= 0 ? o->min_lr : o->lr / 10), o->warmup, o->steps };
    tr_adamw adam = { (float)o->beta1, (float)o->beta2, (float)o->eps, (float)o->weight_decay };
    smp_rng rng; /* --bench tokens */
    smp_rng_seed(&rng, (uint64_t)o->seed);
    const int tty = !o->quiet && !o->bench && isatty(2);
    int log_every = o->log_every >= 0 ? o->log_every : (o->steps >= 20 ? o->steps / 20 : 1);
    const int start = r->step, timed_from = start + (o->bench ? o->bench_warmup : 0);
    double t_start = av_now(), last_draw = 0;
    int rc = 0;
    r->t_timed = t_start;
    r->tok_timed = r->tokens;
    while (r->step < o->steps) {
        if (r->step == timed_from) r->t_timed = av_now(), r->tok_timed = r->tokens;
        const int step = r->step + 1;
        tr_zero_grad(r->m);
        double loss = 0;
        for (int k = 0; k < o->accum; k++) {
            if (o->bench) {
                for (int i = 0; i < B * T; i++) r->in[i] = (int32_t)(smp_rng_next(&rng) % (uint64_t)r->m->cfg.vocab);
                for (int i = 0; i < B * T; i++) r->tg[i] = i + 1 < B * T ? r->in[i + 1] : r->in[0];
            } else if ((rc = shard_next_batch(r->loader, B, T, r->in, r->tg, &r->err))) {
                return rc;
            }
            /* dropout masks from (seed, step, micro-batch): a resumed run draws the same */
            smp_rng kr;
            smp_rng_seed(&kr, (uint64_t)o->seed ^ ((uint64_t)step << 20) ^ (uint64_t)k);
            r->m->dropout_key = smp_rng_next(&kr);
            float l;
            if ((rc = tr_forward(r->m, r->in, r->tg, B, T, &l, NULL, r->nt, &r->err))) return rc;
            if (!isfinite(l)) { loss = l; break; }
            loss += l;
            if ((rc = tr_backward(r->m, 1.0f / (float)o->accum, r->nt, &r->err))) return rc;
        }
        loss /= o->accum;
        double gnorm = isfinite(loss) ? tr_clip_grad_norm(r->m, (float)o->clip, r->nt) : NAN;
        if (!isfinite(loss) || !isfinite(gnorm)) {
            /* the parameters are still those after step r->step: keep them if they are finite */
            int good = all_finite(r->m->params, r->m->n_params);
            if (good && r->step > 0 && !o->bench && save(r) == 0)
                return av_errf(&r->err, AV_EFORMAT, "%s is not finite at step %d; stopped. Last good state (step %d) saved to %s",
                               isfinite(loss) ? "the gradient norm" : "the loss", step, r->step, r->ckpt_path);
            return av_errf(&r->err, AV_EFORMAT, "%s is not finite at step %d; stopped (%s)",
                           isfinite(loss) ? "the gradient norm" : "the loss", step,
                           o->bench ? "bench" : r->step ? "could not save a good checkpoint" : "no step was good");
        }
        const float lr = tr_lr_at(&sch, r->step);
        if ((rc = tr_adamw_step(r->m, &adam, lr, step, r->nt, &r->err))) return rc;
        r->step = step;
        r->tokens += (uint64_t)B * T * o->accum;
        double now = av_now(), el = now - t_start;
        double tps = (double)(r->tokens - r->tok_timed) / (now - r->t_timed + 1e-12);
        if (r->step <= timed_from) tps = (double)B * T * o->accum * (r->step - start) / (el + 1e-12);
        double mfu = r->peak_gflops > 0 ? tps * r->flops_per_token / (r->peak_gflops * 1e9) : 0;
        if (r->metrics)
            fprintf(r->metrics,
                    "{\"type\":\"train\",\"step\":%d,\"loss\":%.9g,\"lr\":%.9g,\"grad_norm\":%.9g,"
                    "\"tokens_per_s\":%.1f,\"mfu\":%.4f,\"time_s\":%.3f}\n",
                    r->step, loss, (double)lr, gnorm, tps, mfu, el);
        if (r->metrics) fflush(r->metrics); /* live for `tail -f`; a kill loses at most this line */
        if (!o->quiet && !o->bench) {
            int last = r->step == o->steps;
            if (tty ? (now - last_draw > 0.1 || last) : (log_every && (r->step % log_every == 0 || last))) {
                progress(r, tty, loss, lr, tps, mfu, el, start);
                last_draw = now;
            }
        }
        int last = r->step == o->steps;
        if (r->val && ((o->eval_every && r->step % o->eval_every == 0) || last)) {
            double vl;
            if ((rc = validate_loss(r, &vl))) return rc;
            if (r->metrics)
                fprintf(r->metrics, "{\"type\":\"val\",\"step\":%d,\"val_loss\":%.9g,\"val_ppl\":%.9g}\n", r->step, vl,
                        exp(vl));
            if (!o->quiet) fprintf(stderr, "%sstep %d: validation loss %.4f (ppl %.2f)\n", tty ? "\r\033[K" : "",
                                   r->step, vl, exp(vl));
        }
        if (!o->bench && (g_stop || last || (o->ckpt_every && r->step % o->ckpt_every == 0)) && (rc = save(r)))
            return rc;
        if (g_stop) { *stopped = g_stop; return 0; }
    }
    if (tty) fputc('\n', stderr);
    return 0;
}

/* Peak resident memory (VmHWM, MB) since the last reset_peak_rss, -1 when unknown. */
static double peak_rss_mb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kb = strtod(line + 6, NULL);
    if (f) fclose(f);
    return kb < 0 ? -1 : kb / 1024;
}

/* Restart VmHWM from the current RSS (Linux >= 4.0), so the sgemm peak
 * probe's buffers do not count as the training's memory. */
static void reset_peak_rss(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f);
        fclose(f);
    }
}

static int bench_report(run *r, double secs, int steps) {
    const train_opts *o = &r->o;
    double tok = (double)o->batch * r->m->cfg.seq_len * o->accum * steps;
    double tps = tok / secs, gf = tps * r->flops_per_token / 1e9;
    printf("{\"tokens_per_s\":%.1f,\"mfu\":%.4f,\"peak_gflops\":%.2f,\"flops_per_token\":%.0f,\"gflops\":%.2f,"
           "\"params\":%zu,\"threads\":%d,\"batch\":%d,\"seq\":%d,\"steps\":%d,\"step_s\":%.4f,"
           "\"peak_rss_mb\":%.1f,\"lora\":%s}\n",
           tps, gf / r->peak_gflops, r->peak_gflops, r->flops_per_token, gf, r->m->n_params, r->nt, o->batch,
           r->m->cfg.seq_len, steps, secs / steps, peak_rss_mb(), r->m->lora ? "true" : "false");
    return 0;
}

int cmd_train(int argc, char **argv) {
    run R = { 0 }, *r = &R;
    void *keep = NULL;
    int code = 2, rc;
    train_opts_defaults(&r->o);
    int p = train_opts_parse(&r->o, argc, argv, &keep);
    if (p) { code = p > 0 ? 0 : 2; goto done; }
    train_opts_resolve(&r->o);
    train_opts *o = &r->o;
    if ((rc = validate(r))) { fprintf(stderr, PFX ": %s\n", r->err.msg); goto done; }
    code = 1;
    r->nt = o->threads > 0 ? o->threads : omp_get_max_threads();
    r->ckpt_path = join(o->out, "checkpoint.safetensors");
    r->metrics_path = join(o->out, "metrics.jsonl");
    r->gguf_path = join(o->out, "model.gguf");
    r->hf_path = join(o->out, "hf");
    r->adapter_path = join(o->out, "adapter.gguf");
    r->settings = train_opts_json(o);
    if (!r->ckpt_path || !r->metrics_path || !r->gguf_path || !r->hf_path || !r->adapter_path || !r->settings) {
        fprintf(stderr, PFX ": out of memory\n");
        goto done;
    }
    if (!o->bench) {
        if (o->resume && !file_exists(r->ckpt_path)) {
            fprintf(stderr, PFX ": --resume: %s does not exist\n", r->ckpt_path);
            goto done;
        }
        if (!o->resume && file_exists(r->ckpt_path)) {
            fprintf(stderr, PFX ": %s already holds a run (%s); pass --resume, or another -o\n", o->out,
                    r->ckpt_path);
            goto done;
        }
        if ((rc = open_data(r)) || (rc = shard_loader_new(r->train, (uint64_t)o->seed, &r->loader, &r->err))) {
            fprintf(stderr, PFX ": %s\n", r->err.msg);
            goto done;
        }
    }
    if ((rc = build_model(r)) || (rc = check_model_flags(r))) {
        fprintf(stderr, PFX ": %s\n", r->err.msg);
        goto done;
    }
    const tr_config *c = &r->m->cfg;
    if (r->train && (rc = shard_check_vocab(r->train, c->vocab, &r->err))) {
        fprintf(stderr, PFX ": %s\n", r->err.msg);
        goto done;
    }
    if (r->tok && tok_n_vocab(r->tok) > c->vocab) {
        fprintf(stderr, PFX ": the tokenizer has %d tokens, the model only %d embeddings\n", tok_n_vocab(r->tok),
                c->vocab);
        goto done;
    }
    int64_t need = (int64_t)c->seq_len + 1;
    if (r->train && (int64_t)shard_n_tokens(r->train) < need) {
        fprintf(stderr, PFX ": %s: %" PRIu64 " tokens, a window needs %" PRId64 "\n", shard_name(r->train),
                shard_n_tokens(r->train), need);
        goto done;
    }
    if (r->val && (int64_t)shard_n_tokens(r->val) < need) {
        fprintf(stderr, PFX ": %s: %" PRIu64 " tokens, too few for one validation window of %" PRId64 "\n",
                shard_name(r->val), shard_n_tokens(r->val), need);
        goto done;
    }
    if (r->step >= o->steps) {
        fprintf(stderr, PFX ": %s is at step %d; --steps %d leaves nothing to do\n", r->ckpt_path, r->step, o->steps);
        goto done;
    }
    r->in = malloc((size_t)o->batch * c->seq_len * sizeof *r->in);
    r->tg = malloc((size_t)o->batch * c->seq_len * sizeof *r->tg);
    if (!r->in || !r->tg) { fprintf(stderr, PFX ": out of memory\n"); goto done; }
    if (!o->bench) {
        if (mkdir(o->out, 0777) && errno != EEXIST) {
            fprintf(stderr, PFX ": %s: %s\n", o->out, strerror(errno));
            goto done;
        }
        if (o->resume && (rc = trim_metrics(r))) { fprintf(stderr, PFX ": %s\n", r->err.msg); goto done; }
        r->metrics = fopen(r->metrics_path, o->resume ? "a" : "w");
        if (!r->metrics) { fprintf(stderr, PFX ": %s: %s\n", r->metrics_path, strerror(errno)); goto done; }
    }
    r->peak_gflops = sgemm_peak(r->nt);
    reset_peak_rss();
    r->flops_per_token = flops_per_token(r->m);
    if (!o->quiet && !o->bench && r->m->lora) {
        const tr_lora_config *lc = tr_lora_get(r->m);
        char tl[160];
        tr_lora_targets_str(lc->targets, tl, sizeof tl);
        fprintf(stderr, PFX ": LoRA r %d alpha %g%s on %s: %zu trainable parameters; base %s frozen "
                "(dim %d, %d layers, %d/%d heads, ffn %d, vocab %d), seq %d, batch %dx%d, %d threads%s\n",
                lc->r, (double)lc->alpha, lc->dropout > 0 ? " dropout" : "", tl, r->m->n_params, o->init ? o->init : "",
                c->dim, c->n_layer, c->n_head, c->n_kv_head, c->ffn, c->vocab, c->seq_len, o->batch, o->accum, r->nt,
                o->resume ? " (resumed)" : "");
    } else if (!o->quiet && !o->bench)
        fprintf(stderr,
                PFX ": %zu parameters (dim %d, %d layers, %d/%d heads, ffn %d, vocab %d, seq %d%s), "
                "batch %dx%d, %d threads, sgemm peak %.0f GFLOP/s%s\n",
                r->m->n_params, c->dim, c->n_layer, c->n_head, c->n_kv_head, c->ffn, c->vocab, c->seq_len,
                c->tied ? ", tied" : "", o->batch, o->accum, r->nt, r->peak_gflops,
                o->resume ? " (resumed)" : "");
    struct sigaction sa = { 0 };
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int stopped = 0, start = r->step;
    double t0 = av_now();
    rc = train_steps(r, &stopped);
    double secs = av_now() - t0;
    if (r->metrics && fclose(r->metrics) && !rc) rc = av_errf(&r->err, AV_EIO, "%s: write failed", r->metrics_path);
    r->metrics = NULL;
    if (rc) { fprintf(stderr, PFX ": %s\n", r->err.msg); goto done; }
    if (stopped) {
        fprintf(stderr, "\n" PFX ": %s at step %d; checkpoint saved to %s (continue with --resume)\n",
                stopped == SIGINT ? "interrupted" : "terminated", r->step, r->ckpt_path);
        code = 128 + stopped;
        goto done;
    }
    if (o->bench) {
        int timed = o->steps - start - o->bench_warmup;
        if (timed < 1) { fprintf(stderr, PFX ": --bench: --steps must exceed --bench-warmup\n"); goto done; }
        (void)secs;
        bench_report(r, av_now() - r->t_timed, timed);
        code = 0;
        goto done;
    }
    if ((rc = o->lora ? export_adapter(r) : export_models(r))) { fprintf(stderr, PFX ": %s\n", r->err.msg); goto done; }
    if (o->json && o->lora) {
        printf("{\"steps\":%d,\"tokens\":%" PRIu64 ",\"seconds\":%.3f,\"params\":%zu,\"checkpoint\":\"%s\","
               "\"metrics\":\"%s\",\"adapter\":\"%s\",\"adapter_out\":%s%s%s}\n",
               r->step, r->tokens, secs, r->m->n_params, r->ckpt_path, r->metrics_path, r->adapter_path,
               o->adapter_out ? "\"" : "", o->adapter_out ? o->adapter_out : "null", o->adapter_out ? "\"" : "");
    } else if (o->json) {
        printf("{\"steps\":%d,\"tokens\":%" PRIu64 ",\"seconds\":%.3f,\"params\":%zu,\"checkpoint\":\"%s\","
               "\"metrics\":\"%s\",\"gguf\":\"%s\",\"hf\":%s%s%s}\n",
               r->step, r->tokens, secs, r->m->n_params, r->ckpt_path, r->metrics_path, r->gguf_path,
               o->no_hf ? "" : "\"", o->no_hf ? "null" : r->hf_path, o->no_hf ? "" : "\"");
    }
    if (!o->quiet && o->lora)
        fprintf(stderr, PFX ": done, %d steps in %.1f s. Adapter: %s%s%s; metrics: %s; checkpoint: %s\n", r->step, secs,
                r->adapter_path, o->adapter_out ? " and " : "", o->adapter_out ? o->adapter_out : "", r->metrics_path,
                r->ckpt_path);
    else if (!o->quiet)
        fprintf(stderr, PFX ": done, %d steps in %.1f s. Model: %s%s%s; metrics: %s; checkpoint: %s\n", r->step, secs,
                r->gguf_path, o->no_hf ? "" : " and ", o->no_hf ? "" : r->hf_path, r->metrics_path, r->ckpt_path);
    code = 0;
done:
    if (r->metrics) fclose(r->metrics);
    free(r->in); free(r->tg);
    shard_loader_free(r->loader);
    shard_free(r->train);
    shard_free(r->val);
    tok_free(r->tok);
    tr_model_free(r->m);
    av_loaded_release(&r->base);
    free(r->lora_json);
    free(r->adapter_path);
    free(r->ckpt_path); free(r->metrics_path); free(r->gguf_path); free(r->hf_path);
    free(r->settings);
    json_decref(keep);
    return code;
}
