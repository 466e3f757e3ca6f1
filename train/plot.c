/* anvil train plot — metrics.jsonl (train and validation loss) -> one SVG.
 * Every input is read and checked before the output is opened; the SVG is
 * built in memory and written atomically (core/io.h). */
#include "plot.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"

#define PFX "anvil train plot"
#define MAX_PTS 2000 /* points per train polyline (bucket averages beyond that) */
#define W 800
#define H 450
#define ML 72.0 /* plot area margins */
#define MR 24.0
#define MT 44.0
#define MB 56.0
#define PW (W - ML - MR)
#define PH (H - MT - MB)
#define MAX_TICKS 64

static const char *const COLORS[] = { "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                      "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf" };
#define N_COLORS (sizeof COLORS / sizeof COLORS[0])

typedef struct { double x, y; } pt; /* step, loss */
typedef struct { pt *p; size_t n, cap; } series;
typedef struct { const char *path; series tr, va; } run;
typedef struct { char *s; size_t n, cap; int oom; } sbuf;
/* lo/hi in plotted units (log10 of the loss when log) */
typedef struct { double lo, hi, step; int log; } axis;

static void usage(FILE *f) {
    fprintf(f,
            "usage: anvil train plot METRICS.jsonl [METRICS2.jsonl ...] -o OUT.svg\n"
            "                        [--title TEXT] [--smooth N] [--log-y] [--json]\n"
            "\n"
            "Draws the training loss (\"type\":\"train\" lines, or lines with \"loss\" and no \"type\")\n"
            "and the validation loss (\"type\":\"val\" lines, \"val_loss\") of each metrics.jsonl\n"
            "against \"step\" as a self-contained SVG, one colour per file.\n"
            "\n"
            "  -o, --output FILE  the SVG to write (atomically)\n"
            "  --title TEXT       default: the input file name(s)\n"
            "  --smooth N         also draw a centred N-point moving average of the train loss\n"
            "                     (the raw curve stays, faint); default 1 = raw only\n"
            "  --log-y            logarithmic loss axis\n"
            "  --json             print {\"train_points\",\"val_points\",\"min_loss\" (lowest train loss),\n"
            "                     \"final_val_loss\" (last val line of the last FILE, or null),\n"
            "                     \"output\",\"files\":[per-file counts]} on stdout\n"
            "\n"
            "Train curves over %d points are averaged per bucket down to %d points.\n"
            "Exit codes: 0 ok, 1 failure, 2 usage error.\n",
            MAX_PTS, MAX_PTS);
}

static int push(series *s, double x, double y) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 256;
        pt *np = realloc(s->p, cap * sizeof *np);
        if (!np) return -1;
        s->p = np, s->cap = cap;
    }
    s->p[s->n++] = (pt){ x, y };
    return 0;
}

/* Read r->path; prints the one error line itself. */
static int load_run(run *r) {
    FILE *f = fopen(r->path, "r");
    if (!f) { fprintf(stderr, PFX ": %s: cannot open: %s\n", r->path, strerror(errno)); return -1; }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long ln = 0;
    int rc = -1;
    json_t *j = NULL;
    while ((len = getline(&line, &cap, f)) >= 0) {
        ln++;
        if (strspn(line, " \t\r\n") == (size_t)len) continue;
        json_error_t je;
        if (!(j = json_loadb(line, (size_t)len, 0, &je)) || !json_is_object(j)) {
            fprintf(stderr, PFX ": %s:%ld: malformed JSON: %s\n", r->path, ln, j ? "not an object" : je.text);
            goto done;
        }
        json_t *jt = json_object_get(j, "type");
        const char *type = json_string_value(jt), *key = NULL;
        series *s = NULL;
        if ((!jt && json_object_get(j, "loss")) || (type && !strcmp(type, "train"))) s = &r->tr, key = "loss";
        else if (type && !strcmp(type, "val")) s = &r->va, key = "val_loss";
        if (s) { /* other line types (config, events, ...) are not plotted */
            json_t *js = json_object_get(j, "step"), *jl = json_object_get(j, key);
            if (!json_is_number(js) || !json_is_number(jl)) { /* JSON numbers are finite */
                fprintf(stderr, PFX ": %s:%ld: %s line without a numeric \"%s\"\n", r->path, ln,
                        s == &r->tr ? "train" : "val", !json_is_number(js) ? "step" : key);
                goto done;
            }
            double x = json_number_value(js), y = json_number_value(jl);
            if (fabs(x) > 1e300 || fabs(y) > 1e300) {
                fprintf(stderr, PFX ": %s:%ld: \"step\" or \"%s\" out of range\n", r->path, ln, key);
                goto done;
            }
            if (push(s, x, y)) {
                fprintf(stderr, PFX ": %s: out of memory\n", r->path);
                goto done;
            }
        }
        json_decref(j);
        j = NULL;
    }
    if (ferror(f)) { fprintf(stderr, PFX ": %s: read error: %s\n", r->path, strerror(errno)); goto done; }
    if (!r->tr.n && !r->va.n) { fprintf(stderr, PFX ": %s: no train or val points\n", r->path); goto done; }
    rc = 0;
done:
    json_decref(j);
    free(line);
    fclose(f);
    return rc;
}

__attribute__((format(printf, 2, 3))) static void sb_printf(sbuf *b, const char *fmt, ...) {
    for (;;) {
        if (b->oom) return;
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) { b->oom = 1; return; }
        if (b->s && b->n + (size_t)k < b->cap) { b->n += (size_t)k; return; }
        size_t cap = b->cap ? b->cap * 2 : 65536;
        while (cap < b->n + (size_t)k + 1) cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns) { b->oom = 1; return; }
        b->s = ns, b->cap = cap;
    }
}

/* Length of the valid UTF-8 sequence at p (0 if invalid). */
static size_t utf8_len(const unsigned char *p) {
    size_t n = p[0] < 0x80 ? 1 : (p[0] & 0xE0) == 0xC0 && p[0] >= 0xC2 ? 2 : (p[0] & 0xF0) == 0xE0 ? 3
             : (p[0] & 0xF8) == 0xF0 && p[0] <= 0xF4 ? 4 : 0;
    for (size_t i = 1; i < n; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    if ((n == 3 && ((p[0] == 0xE0 && p[1] < 0xA0) || (p[0] == 0xED && p[1] >= 0xA0))) ||
        (n == 4 && ((p[0] == 0xF0 && p[1] < 0x90) || (p[0] == 0xF4 && p[1] >= 0x90))))
        return 0;
    return n;
}

/* Text as XML character data: markup escaped, control bytes and invalid UTF-8 -> '?'. */
static void sb_esc(sbuf *b, const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        size_t n = utf8_len(p);
        if (*p == '&') sb_printf(b, "&amp;");
        else if (*p == '<') sb_printf(b, "&lt;");
        else if (*p == '>') sb_printf(b, "&gt;");
        else if (*p == '"') sb_printf(b, "&quot;");
        else if (!n || (*p < 0x20 && *p != '\t')) sb_printf(b, "?");
        else sb_printf(b, "%.*s", (int)n, (const char *)p);
        p += n ? n : 1;
    }
}

static double nice_step(double x) {
    double e = pow(10, floor(log10(x))), f = x / e;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * e;
}

/* Axis over data [mn, mx] (mx >= mn; positive when log). */
static axis make_axis(double mn, double mx, int log_y) {
    axis a = { .log = log_y };
    if (log_y) {
        mn = log10(mn), mx = log10(mx);
        double pad = mx - mn > 1e-9 ? 0.04 * (mx - mn) : 0.1;
        a.lo = mn - pad, a.hi = mx + pad;
        return a;
    }
    if (mx - mn <= 1e-12 * fmax(1, fabs(mx))) {
        double pad = mn != 0 ? fabs(mn) * 0.1 : 1;
        mn -= pad, mx += pad;
    }
    a.step = nice_step((mx - mn) / 5);
    a.lo = floor(mn / a.step) * a.step, a.hi = ceil(mx / a.step) * a.step;
    return a;
}

/* Tick values (in data units) of a; returns their count. Log axes: 1/2/5 x 10^k,
 * only 10^k over more than 3 decades, all of 1..9 x 10^k if that gives < 3 ticks. */
static int ticks(const axis *a, double *t) {
    int n = 0;
    if (!a->log) {
        for (int i = 0; n < MAX_TICKS; i++) {
            double v = a->lo + i * a->step;
            if (v > a->hi + a->step * 1e-6) break;
            t[n++] = fabs(v) < a->step * 1e-6 ? 0 : v;
        }
        return n;
    }
    static const int m125[] = { 1, 2, 5 }, m1[] = { 1 }, m19[] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };
    for (int pass = a->hi - a->lo > 3 ? 0 : 1; pass < 3 && n < 3; pass++) {
        const int *m = pass == 0 ? m1 : pass == 1 ? m125 : m19;
        int nm = pass == 0 ? 1 : pass == 1 ? 3 : 9;
        n = 0;
        for (int k = (int)floor(a->lo); k <= (int)ceil(a->hi) && n < MAX_TICKS; k++)
            for (int i = 0; i < nm && n < MAX_TICKS; i++) {
                double v = m[i] * pow(10, k), l = log10(v);
                if (l >= a->lo - 1e-9 && l <= a->hi + 1e-9) t[n++] = v;
            }
    }
    return n;
}

static void tick_label(const axis *a, double v, char *buf, size_t n) {
    if (a->log || fabs(v) >= 1e9) snprintf(buf, n, "%g", v);
    else snprintf(buf, n, "%.*f", a->step >= 1 ? 0 : (int)ceil(-log10(a->step) - 1e-9), v);
}

/* Data -> pixel. Non-positive values on a log axis sit on its bottom edge. */
static double px(const axis *a, double v) { return ML + (v - a->lo) / (a->hi - a->lo) * PW; }
static double py(const axis *a, double v) {
    double t = a->log ? (v > 0 ? log10(v) : a->lo) : v;
    return MT + PH - (t - a->lo) / (a->hi - a->lo) * PH;
}

/* A polyline through p, averaged per bucket down to max points. */
static void polyline(sbuf *b, const axis *ax, const axis *ay, const pt *p, size_t n, size_t max, const char *attrs) {
    size_t m = n > max ? max : n;
    sb_printf(b, "<polyline %s points=\"", attrs);
    for (size_t k = 0; k < m; k++) {
        size_t i0 = k * n / m, i1 = (k + 1) * n / m;
        double sx = 0, sy = 0;
        for (size_t i = i0; i < i1; i++) sx += p[i].x, sy += p[i].y;
        sb_printf(b, "%s%.1f,%.1f", k ? " " : "", px(ax, sx / (double)(i1 - i0)), py(ay, sy / (double)(i1 - i0)));
    }
    sb_printf(b, "\"/>\n");
}

/* out[i] = (p[i].x, mean of p[].y over the centred window [i - w/2, i - w/2 + w), cut
 * at the ends): no lag behind the raw curve. */
static void moving_average(const pt *p, size_t n, size_t w, pt *out) {
    size_t h = w / 2, lo = 0, hi = 0;
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        size_t want_lo = i > h ? i - h : 0, want_hi = i + w - h < n ? i + w - h : n;
        while (hi < want_hi) sum += p[hi++].y;
        while (lo < want_lo) sum -= p[lo++].y;
        out[i] = (pt){ p[i].x, sum / (double)(hi - lo) };
    }
}

/* The whole SVG into b. Returns -1 (after printing why) when it cannot be drawn. */
static int render(sbuf *b, const run *runs, int n_runs, const char *title, long smooth, int log_y) {
    double xmn = INFINITY, xmx = -INFINITY, ymn = INFINITY, ymx = -INFINITY;
    pt *sm = NULL;
    for (int r = 0; r < n_runs; r++)
        for (int v = 0; v < 2; v++) {
            const series *s = v ? &runs[r].va : &runs[r].tr;
            for (const pt *q = s->p; q < s->p + s->n; q++) {
                xmn = fmin(xmn, q->x), xmx = fmax(xmx, q->x);
                if (!log_y || q->y > 0) ymn = fmin(ymn, q->y), ymx = fmax(ymx, q->y);
            }
        }
    if (ymn > ymx) { fprintf(stderr, PFX ": --log-y: no positive loss values to plot\n"); return -1; }
    axis ax = make_axis(xmn, xmx, 0), ay = make_axis(ymn, ymx, log_y);
    double tx[MAX_TICKS], ty[MAX_TICKS];
    int nx = ticks(&ax, tx), ny = ticks(&ay, ty);
    char lab[64];
    sb_printf(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                 "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                 "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n"
                 "<text class=\"title\" x=\"%.1f\" y=\"26\" text-anchor=\"middle\" font-size=\"16\">",
              W, H, W, H, W, H, ML + PW / 2);
    sb_esc(b, title);
    sb_printf(b, "</text>\n<g class=\"xticks\" text-anchor=\"middle\" fill=\"#333\" stroke=\"#e6e6e6\">\n");
    for (int i = 0; i < nx; i++) { /* light grid line + label per tick */
        tick_label(&ax, tx[i], lab, sizeof lab);
        sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/><text x=\"%.1f\" y=\"%.1f\" stroke=\"none\">%s</text>\n",
                  px(&ax, tx[i]), MT, px(&ax, tx[i]), MT + PH, px(&ax, tx[i]), MT + PH + 18, lab);
    }
    sb_printf(b, "</g>\n<g class=\"yticks\" text-anchor=\"end\" fill=\"#333\" stroke=\"#e6e6e6\">\n");
    for (int i = 0; i < ny; i++) {
        tick_label(&ay, ty[i], lab, sizeof lab);
        sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/><text x=\"%.1f\" y=\"%.1f\" stroke=\"none\">%s</text>\n",
                  ML, py(&ay, ty[i]), ML + PW, py(&ay, ty[i]), ML - 6, py(&ay, ty[i]) + 4, lab);
    }
    sb_printf(b, "</g>\n<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333\"/>\n"
                 "<text class=\"xtitle\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">step</text>\n"
                 "<text class=\"ytitle\" transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\">loss%s</text>\n",
              ML, MT, PW, PH, ML + PW / 2, (double)H - 14, MT + PH / 2, log_y ? " (log scale)" : "");
    size_t n_leg = 0, max_len = 0;
    for (int r = 0; r < n_runs; r++) {
        const run *u = &runs[r];
        const char *c = COLORS[(size_t)r % N_COLORS];
        sb_printf(b, "<g class=\"run\" fill=\"none\" stroke=\"%s\">\n", c);
        free(sm);
        sm = NULL;
        if (u->tr.n && smooth > 1) {
            if (!(sm = malloc(u->tr.n * sizeof *sm))) { fprintf(stderr, PFX ": out of memory\n"); return -1; }
            moving_average(u->tr.p, u->tr.n, (size_t)smooth, sm);
            polyline(b, &ax, &ay, u->tr.p, u->tr.n, MAX_PTS, "class=\"train-raw\" stroke-opacity=\"0.25\"");
        }
        if (u->tr.n) polyline(b, &ax, &ay, sm ? sm : u->tr.p, u->tr.n, MAX_PTS, "class=\"train\" stroke-width=\"1.5\"");
        if (u->va.n) {
            polyline(b, &ax, &ay, u->va.p, u->va.n, u->va.n, "class=\"val\" stroke-dasharray=\"6 3\"");
            sb_printf(b, "<g class=\"val-points\" fill=\"white\">\n");
            for (size_t i = 0; i < u->va.n; i++)
                sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\"/>\n", px(&ax, u->va.p[i].x), py(&ay, u->va.p[i].y));
            sb_printf(b, "</g>\n");
        }
        sb_printf(b, "</g>\n");
        n_leg += (size_t)(u->tr.n > 0) + (size_t)(u->va.n > 0);
        max_len = strlen(u->path) + 7 > max_len ? strlen(u->path) + 7 : max_len;
    }
    free(sm);
    double lw = fmin(PW - 20, 40 + 6.6 * (double)max_len), lx = ML + PW - lw - 10, ly = MT + 10;
    sb_printf(b, "<g class=\"legend\">\n<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"white\" "
                 "fill-opacity=\"0.85\" stroke=\"#999\"/>\n", lx, ly, lw, 8 + 18.0 * (double)n_leg);
    for (int r = 0, k = 0; r < n_runs; r++)
        for (int v = 0; v < 2; v++) {
            if (!(v ? runs[r].va.n : runs[r].tr.n)) continue;
            const char *c = COLORS[(size_t)r % N_COLORS];
            double y = ly + 17 + 18.0 * k++;
            sb_printf(b, "<g class=\"legend-entry\"><line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                         "stroke-width=\"1.5\"%s/>", lx + 8, y - 4, lx + 32, y - 4, c, v ? " stroke-dasharray=\"6 3\"" : "");
            if (v) sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"white\" stroke=\"%s\"/>", lx + 20, y - 4, c);
            sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\">", lx + 38, y);
            sb_esc(b, runs[r].path);
            sb_printf(b, ": %s</text></g>\n", v ? "val" : "train");
        }
    sb_printf(b, "</g>\n</svg>\n");
    if (b->oom) { fprintf(stderr, PFX ": out of memory\n"); return -1; }
    return 0;
}

/* The --json summary (see usage); NULL when out of memory. */
static json_t *summary(const run *runs, int n_runs, const char *out_path) {
    size_t tp = 0, vp = 0;
    double mn = INFINITY;
    json_t *j = json_object(), *files = json_array();
    for (int r = 0; r < n_runs; r++) {
        const run *u = &runs[r];
        double rmn = INFINITY;
        for (size_t i = 0; i < u->tr.n; i++) rmn = fmin(rmn, u->tr.p[i].y);
        mn = fmin(mn, rmn), tp += u->tr.n, vp += u->va.n;
        json_t *f = json_object();
        json_object_set_new(f, "path", json_string(u->path));
        json_object_set_new(f, "train_points", json_integer((json_int_t)u->tr.n));
        json_object_set_new(f, "val_points", json_integer((json_int_t)u->va.n));
        json_object_set_new(f, "min_loss", u->tr.n ? json_real(rmn) : json_null());
        json_object_set_new(f, "final_val_loss", u->va.n ? json_real(u->va.p[u->va.n - 1].y) : json_null());
        json_array_append_new(files, f);
    }
    json_object_set_new(j, "train_points", json_integer((json_int_t)tp));
    json_object_set_new(j, "val_points", json_integer((json_int_t)vp));
    json_object_set_new(j, "min_loss", tp ? json_real(mn) : json_null());
    json_object_set(j, "final_val_loss", json_object_get(json_array_get(files, (size_t)n_runs - 1), "final_val_loss"));
    json_object_set_new(j, "output", json_string(out_path));
    json_object_set_new(j, "files", files);
    return j;
}

int cmd_plot(int argc, char **argv) {
    int rc = 2, n_runs = 0, log_y = 0, as_json = 0;
    long smooth = 1;
    const char *out_path = NULL, *title = NULL;
    run *runs = calloc((size_t)argc + 1, sizeof *runs);
    sbuf sb = { 0 }, tb = { 0 };
    json_t *j = NULL;
    av_out *o = NULL;
    av_err err = { 0 };
    if (!runs) { fprintf(stderr, PFX ": out of memory\n"); rc = 1; goto done; }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); rc = 0; goto done; }
        else if ((!strcmp(a, "-o") || !strcmp(a, "--output")) && has) out_path = argv[++i];
        else if (!strcmp(a, "--title") && has) title = argv[++i];
        else if (!strcmp(a, "--smooth") && has) {
            char *end;
            const char *s = argv[++i];
            errno = 0;
            smooth = strtol(s, &end, 10);
            if (errno || end == s || *end || smooth < 1 || smooth > 1000000) {
                fprintf(stderr, PFX ": --smooth wants an integer in [1, 1000000], got '%s'\n", s);
                goto done;
            }
        } else if (!strcmp(a, "--log-y")) log_y = 1;
        else if (!strcmp(a, "--json")) as_json = 1;
        else if (a[0] == '-' && a[1]) {
            fprintf(stderr, PFX ": unknown option or missing value: '%s'\n", a);
            usage(stderr);
            goto done;
        } else runs[n_runs++].path = a;
    }
    if (!n_runs) { fprintf(stderr, PFX ": no METRICS.jsonl files given\n"); usage(stderr); goto done; }
    if (!out_path) { fprintf(stderr, PFX ": -o OUT.svg is required\n"); usage(stderr); goto done; }
    rc = 1;
    for (int r = 0; r < n_runs; r++)
        if (load_run(&runs[r])) goto done;
    if (!title) {
        for (int r = 0; r < n_runs; r++) sb_printf(&tb, "%s%s", r ? ", " : "", runs[r].path);
        if (tb.oom) { fprintf(stderr, PFX ": out of memory\n"); goto done; }
        title = tb.s;
    }
    if (render(&sb, runs, n_runs, title, smooth, log_y)) goto done;
    if (av_out_open(out_path, &o, &err) || av_out_write(o, sb.s, sb.n, &err)) goto io_fail;
    int crc = av_out_commit(o, &err);
    o = NULL;
    if (crc) goto io_fail;
    if (as_json) {
        j = summary(runs, n_runs, out_path);
        /* 15 digits: the %.9g inputs come back as written, without %.17g's ...00000005 tails */
        if (!j || json_dumpf(j, stdout, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15)) || puts("") == EOF ||
            fflush(stdout)) {
            fprintf(stderr, PFX ": cannot write to stdout\n");
            goto done;
        }
    }
    rc = 0;
    goto done;
io_fail:
    fprintf(stderr, PFX ": %s\n", err.msg);
done:
    av_out_abort(o);
    json_decref(j);
    for (int r = 0; r < n_runs; r++) free(runs[r].tr.p), free(runs[r].va.p);
    free(runs);
    free(sb.s);
    free(tb.s);
    return rc;
}
