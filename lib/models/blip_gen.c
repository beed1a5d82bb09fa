/* BLIP caption generation (HF generate() semantics as kohya's make_captions.py uses them) and the
 * image preprocessing; see blip.h.
 *
 * Sampling (do_sample): per step the logits of the last position go through, in HF's order,
 *   repetition penalty (every distinct token already in the sequence, prompt included: a positive
 *   logit divided by the penalty, a negative one multiplied), min length (EOS -inf while the
 *   sequence is shorter than min_length), temperature (skipped at 1), top-k (values below the
 *   k-th largest -> -inf), top-p (ascending sort, softmax, cumulative sum; tokens whose cumulative
 *   probability is <= 1 - top_p are removed, the most likely one always kept), softmax, one draw.
 *   The draw uses value i of the Philox stream (u in [0,1)) and walks the probabilities in token
 *   order; torch's multinomial cannot be reproduced, so sampled captions differ from the
 *   reference's (the distribution is the same).
 * Greedy (beam search with one beam): the same processors without the warpers; argmax (first
 *   maximum).
 * Beam search (transformers 4.44's _beam_search + BeamSearchScorer, with the prompt length taken off
 *   the lengths as since 4.36; length_penalty 1, early_stopping False):
 *   scores = log_softmax(logits) -> min length -> + beam score (beam 0 starts at 0, the others at
 *   -1e9); the best 2·beams over all beams × vocabulary (descending, ties to the lower index);
 *   walking them in order, an EOS candidate within the first `beams` ranks finishes its beam
 *   as a hypothesis scored sum/(len + 1 - prompt), later EOS candidates are dropped, other
 *   candidates fill the next beams until there are `beams`. The hypothesis list keeps the
 *   `beams` best (worst score tracked as transformers does). Done when it is full and its worst
 *   score >= best candidate / (len + 1 - prompt), or at max_length; then the running beams are
 *   added with sum/(len - prompt) and the best hypothesis wins (the last added among equals). */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "io/resample.h"
#include "models/blip.h"

typedef struct hyp {
    double score;
    int32_t *ids;
    int n;
} hyp;

typedef struct hyps {
    hyp *h;
    int n, cap;
    double worst;
} hyps;

static int hyps_add(hyps *H, const int32_t *ids, int n, double sum, int gen_len)
{
    double score = sum / (double)gen_len;
    if (H->n < H->cap || score > H->worst) {
        int32_t *c = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
        if (!c) return sd_err(SD_ENOMEM, "out of memory");
        memcpy(c, ids, sizeof(int32_t) * (size_t)n);
        H->h[H->n++] = (hyp){ score, c, n };
        if (H->n > H->cap) {
            /* sorted([(s, idx)]): remove the lowest (lowest index among equals); worst = the next */
            int lo = 0;
            for (int i = 1; i < H->n; i++)
                if (H->h[i].score < H->h[lo].score) lo = i;
            double second = INFINITY;
            int second_i = -1;
            for (int i = 0; i < H->n; i++) {
                if (i == lo) continue;
                if (H->h[i].score < second || (H->h[i].score == second && i < second_i)) {
                    second = H->h[i].score;
                    second_i = i;
                }
            }
            free(H->h[lo].ids);
            memmove(&H->h[lo], &H->h[lo + 1], sizeof(hyp) * (size_t)(H->n - lo - 1));
            H->n--;
            H->worst = second;
        } else {
            H->worst = score < H->worst ? score : H->worst;
        }
    }
    return SD_OK;
}

typedef struct cand {
    float score;
    int64_t flat;
} cand;

static int cand_cmp(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->flat < y->flat ? -1 : x->flat > y->flat;
}

/* log_softmax of one row in float, as torch computes it (max, then log of the sum of exps) */
static void log_softmax(const float *x, float *y, int64_t V)
{
    float mx = -INFINITY;
    for (int64_t i = 0; i < V; i++) mx = x[i] > mx ? x[i] : mx;
    double s = 0;
    for (int64_t i = 0; i < V; i++) s += exp((double)x[i] - mx);
    float ls = (float)log(s);
    for (int64_t i = 0; i < V; i++) y[i] = x[i] - mx - ls;
}

static int beam_search(sd_ctx *ctx, sd_blip *m, sd_blip_state *s, const int32_t *prompt, int np, const sd_blip_gen *g,
                       float *logits, int32_t **out, int *nout)
{
    const int B = s->beams;
    const int64_t V = m->vocab;
    const int maxlen = g->max_length;
    int rc = SD_OK;
    int32_t *seq = malloc(sizeof(int32_t) * (size_t)B * (size_t)maxlen);
    int32_t *nseq = malloc(sizeof(int32_t) * (size_t)B * (size_t)maxlen);
    float *sc = malloc(sizeof(float) * (size_t)B * (size_t)V);
    float *bs = malloc(sizeof(float) * (size_t)B), *nbs = malloc(sizeof(float) * (size_t)B);
    cand *cd = malloc(sizeof(cand) * (size_t)B * (size_t)V);
    int *src = malloc(sizeof(int) * (size_t)B);
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)B);
    hyps H = { calloc((size_t)B + 1, sizeof(hyp)), 0, B, 1e9 };
    if (!seq || !nseq || !sc || !bs || !nbs || !cd || !src || !tok || !H.h) {
        rc = sd_err(SD_ENOMEM, "out of memory");
        goto out;
    }
    for (int b = 0; b < B; b++) {
        memcpy(seq + (size_t)b * maxlen, prompt, sizeof(int32_t) * (size_t)np);
        bs[b] = b ? -1e9f : 0.0f;
    }
    int32_t *pids = malloc(sizeof(int32_t) * (size_t)B * (size_t)np);
    if (!pids) {
        rc = sd_err(SD_ENOMEM, "out of memory");
        goto out;
    }
    for (int b = 0; b < B; b++) memcpy(pids + (size_t)b * np, prompt, sizeof(int32_t) * (size_t)np);
    rc = sd_blip_decode(ctx, m, s, pids, np, logits);
    free(pids);
    int len = np, done = 0;
    while (!rc) {
        for (int b = 0; b < B; b++) {
            float *row = sc + (size_t)b * V;
            log_softmax(logits + (size_t)b * V, row, V);
            if (len < g->min_length) row[g->eos] = -INFINITY;
            for (int64_t i = 0; i < V; i++) {
                cd[(size_t)b * V + i].score = row[i] + bs[b];
                cd[(size_t)b * V + i].flat = (int64_t)b * V + i;
            }
        }
        /* the best 2·B: partial selection then sort */
        int64_t total = (int64_t)B * V, keep = 2 * B < total ? 2 * B : total;
        if (keep > 16) qsort(cd, (size_t)total, sizeof *cd, cand_cmp);   /* many beams: sort all */
        for (int64_t i = 0; keep <= 16 && i < keep; i++) {
            int64_t best = i;
            for (int64_t j = i + 1; j < total; j++)
                if (cand_cmp(&cd[j], &cd[best]) < 0) best = j;
            cand t = cd[i];
            cd[i] = cd[best];
            cd[best] = t;
        }
        int nb = 0;
        for (int64_t r = 0; r < keep && nb < B; r++) {
            int beam = (int)(cd[r].flat / V);
            int32_t tk = (int32_t)(cd[r].flat % V);
            if (tk == g->eos) {
                if (r >= B) continue;
                rc = hyps_add(&H, seq + (size_t)beam * maxlen, len, (double)cd[r].score, len + 1 - np);
                if (rc) break;
            } else {
                nbs[nb] = cd[r].score;
                src[nb] = beam;
                tok[nb] = tk;
                nb++;
            }
        }
        if (rc) break;
        if (nb < B) {
            rc = sd_err(SD_ESTATE, "beam search: too few candidates");
            break;
        }
        if (H.n >= B) done = H.worst >= (double)cd[0].score / (double)(len + 1 - np);
        for (int b = 0; b < B; b++) {
            memcpy(nseq + (size_t)b * maxlen, seq + (size_t)src[b] * maxlen, sizeof(int32_t) * (size_t)len);
            nseq[(size_t)b * maxlen + len] = tok[b];
            bs[b] = nbs[b];
        }
        int32_t *t = seq;
        seq = nseq;
        nseq = t;
        len++;
        if (done || len >= maxlen) break;
        rc = sd_blip_state_reorder(ctx, s, src);
        if (!rc) rc = sd_blip_decode(ctx, m, s, tok, 1, logits);
    }
    if (!rc && !done)
        for (int b = 0; b < B && !rc; b++) rc = hyps_add(&H, seq + (size_t)b * maxlen, len, (double)bs[b], len - np);
    if (!rc) {
        int best = 0;
        for (int i = 1; i < H.n; i++)
            if (H.h[i].score >= H.h[best].score) best = i;
        *out = H.h[best].ids;
        *nout = H.h[best].n;
        H.h[best].ids = NULL;
    }
out:
    for (int i = 0; H.h && i < H.n; i++) free(H.h[i].ids);
    free(H.h);
    free(seq);
    free(nseq);
    free(sc);
    free(bs);
    free(nbs);
    free(cd);
    free(src);
    free(tok);
    return rc;
}

typedef struct pv {
    float v;
    int32_t i;
} pv;

static int pv_cmp_desc(const void *a, const void *b)
{
    const pv *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* temperature, top-k, top-p on scores already through the processors (in place) */
static void warp(float *sc, int64_t V, const sd_blip_gen *g, pv *tmp)
{
    if (g->temperature != 1.0f)
        for (int64_t i = 0; i < V; i++) sc[i] /= g->temperature;
    for (int64_t i = 0; i < V; i++) tmp[i] = (pv){ sc[i], (int32_t)i };
    qsort(tmp, (size_t)V, sizeof *tmp, pv_cmp_desc);
    if (g->top_k > 0 && g->top_k < V) {
        float kth = tmp[g->top_k - 1].v;
        for (int64_t i = 0; i < V; i++)
            if (sc[i] < kth) sc[i] = -INFINITY;
        for (int64_t i = g->top_k; i < V; i++)
            if (tmp[i].v < kth) tmp[i].v = -INFINITY;
    }
    if (g->top_p < 1.0) {
        /* ascending order = tmp reversed; softmax over all, cumulative from the smallest */
        float mx = tmp[0].v;
        double sum = 0;
        for (int64_t i = 0; i < V; i++) sum += tmp[i].v == -INFINITY ? 0.0 : exp((double)tmp[i].v - mx);
        float cum = 0;
        for (int64_t i = V - 1; i >= 1; i--) {   /* the largest (i = 0) is always kept */
            float p = tmp[i].v == -INFINITY ? 0.0f : (float)(exp((double)tmp[i].v - mx) / sum);
            cum += p;
            if (cum <= (float)(1.0 - g->top_p)) sc[tmp[i].i] = -INFINITY;
        }
    }
}

/* repetition penalty and min length (the processors) */
static void process(float *sc, int64_t V, const sd_blip_gen *g, const unsigned char *seen, int len)
{
    if (g->repetition_penalty != 1.0f && seen)
        for (int64_t i = 0; i < V; i++)
            if (seen[i]) sc[i] = sc[i] < 0 ? sc[i] * g->repetition_penalty : sc[i] / g->repetition_penalty;
    if (len < g->min_length) sc[g->eos] = -INFINITY;
}

int sd_blip_process_logits(float *sc, int64_t V, const sd_blip_gen *g, const unsigned char *seen, int len)
{
    if (g->eos < 0 || g->eos >= V) return sd_err(SD_EINVAL, "BLIP: EOS id out of range");
    process(sc, V, g, seen, len);
    if (g->beam_search) return SD_OK;
    pv *tmp = malloc(sizeof(pv) * (size_t)V);
    if (!tmp) return sd_err(SD_ENOMEM, "out of memory");
    warp(sc, V, g, tmp);
    free(tmp);
    return SD_OK;
}

/* one token from warped scores: u in [0,1) against the cumulative probabilities in token order */
static int32_t draw(const float *sc, int64_t V, float u)
{
    float mx = -INFINITY;
    for (int64_t i = 0; i < V; i++) mx = sc[i] > mx ? sc[i] : mx;
    double sum = 0;
    for (int64_t i = 0; i < V; i++) sum += sc[i] == -INFINITY ? 0.0 : exp((double)sc[i] - mx);
    double target = (double)u * sum, acc = 0;
    int32_t last = -1;
    for (int64_t i = 0; i < V; i++) {
        if (sc[i] == -INFINITY) continue;
        last = (int32_t)i;
        acc += exp((double)sc[i] - mx);
        if (acc > target) return (int32_t)i;
    }
    return last;
}

int sd_blip_generate(sd_ctx *ctx, sd_blip *m, sd_blip_state *s, const int32_t *prompt, int np, const sd_blip_gen *g,
                     const sd_rng *rng, int32_t **out, int *nout)
{
    *out = NULL;
    *nout = 0;
    const int64_t V = m->vocab;
    if (np < 1 || g->max_length > s->max_len || g->max_length > m->positions || g->eos < 0 || g->eos >= V)
        return sd_err(SD_EINVAL, "BLIP generate: bad prompt, length or EOS");
    int beams = g->beam_search ? g->num_beams : 1;
    if (beams != s->beams) return sd_err(SD_EINVAL, "BLIP generate: the state has %d beams, not %d", s->beams, beams);
    for (int i = 0; i < np; i++)
        if (prompt[i] < 0 || prompt[i] >= V) return sd_err(SD_ERANGE, "BLIP generate: prompt id %d out of range", prompt[i]);
    float *logits = malloc(sizeof(float) * (size_t)beams * (size_t)V);
    if (!logits) return sd_err(SD_ENOMEM, "out of memory");
    int rc;
    if (np >= g->max_length) {   /* nothing to generate */
        *out = malloc(sizeof(int32_t) * (size_t)np);
        rc = *out ? SD_OK : sd_err(SD_ENOMEM, "out of memory");
        if (*out) memcpy(*out, prompt, sizeof(int32_t) * (size_t)np), *nout = np;
        free(logits);
        return rc;
    }
    if (g->beam_search && beams > 1) {
        rc = beam_search(ctx, m, s, prompt, np, g, logits, out, nout);
        free(logits);
        return rc;
    }
    int32_t *seq = malloc(sizeof(int32_t) * (size_t)g->max_length);
    pv *tmp = g->beam_search ? NULL : malloc(sizeof(pv) * (size_t)V);
    unsigned char *seen = calloc((size_t)V, 1);
    if (!seq || !seen || (!g->beam_search && !tmp)) {
        free(seq);
        free(tmp);
        free(seen);
        free(logits);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    memcpy(seq, prompt, sizeof(int32_t) * (size_t)np);
    for (int i = 0; i < np; i++) seen[prompt[i]] = 1;
    int len = np;
    rc = sd_blip_decode(ctx, m, s, prompt, np, logits);
    while (!rc && len < g->max_length) {
        float *sc = logits;
        process(sc, V, g, seen, len);
        int32_t t;
        if (g->beam_search) {
            t = 0;
            for (int64_t i = 1; i < V; i++)
                if (sc[i] > sc[t]) t = (int32_t)i;
        } else {
            warp(sc, V, g, tmp);
            t = draw(sc, V, sd_rng_uniform_at(rng, (uint64_t)(len - np)));
        }
        if (t == g->eos) break;
        seq[len++] = t;
        seen[t] = 1;
        if (len >= g->max_length) break;
        rc = sd_blip_decode(ctx, m, s, &t, 1, logits);
    }
    free(tmp);
    free(seen);
    free(logits);
    if (rc) {
        free(seq);
        return rc;
    }
    *out = seq;
    *nout = len;
    return SD_OK;
}

/* ---- preprocessing ------------------------------------------------------------------------------ */

int sd_blip_prepare_image(const sd_image *rgb, int size, float *chw)
{
    if (rgb->c != 3 || rgb->w < 1 || rgb->h < 1 || size < 1)
        return sd_err(SD_EINVAL, "BLIP preprocessing: expected an RGB image");
    sd_image r = { 0 };
    const sd_image *src = rgb;
    if (rgb->w != size || rgb->h != size) {
        int rc = sd_resample(rgb, size, size, SD_RESAMPLE_BICUBIC, &r);
        if (rc) return rc;
        src = &r;
    }
    static const float mean[3] = { 0.48145466f, 0.4578275f, 0.40821073f };
    static const float stdv[3] = { 0.26862954f, 0.26130258f, 0.27577711f };
    const size_t hw = (size_t)size * (size_t)size;
    for (int c = 0; c < 3; c++) {
        float lut[256];
        for (int i = 0; i < 256; i++) lut[i] = ((float)i / 255.0f - mean[c]) / stdv[c];
        for (size_t p = 0; p < hw; p++) chw[(size_t)c * hw + p] = lut[src->px[p * 3 + c]];
    }
    sd_image_free(&r);
    return SD_OK;
}
