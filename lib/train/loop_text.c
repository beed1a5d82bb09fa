/* The text path of the training loop (see loop_internal.h): a batch's captions processed and
 * tokenised (plain, --weighted_captions, textual inversion's templates and tokens), the text
 * encoder(s) over the ids into the UNet's context (SD1/SD2: one CLIP, 75/150/225 tokens; SDXL: TE1
 * layer 11 and TE2 penultimate concatenated, and the UNet's vector from TE2's pooled output and the
 * size embedding), the encoders' backward when they train, and SDXL's
 * --cache_text_encoder_outputs[_to_disk] (§4.8). */
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/log.h"
#include "base/progress.h"
#include "base/rng.h"
#include "io/te_cache.h"
#include "models/sdxl.h"
#include "train/loop_internal.h"

/* Multiply rows of a [B, seqlen, W] context (or its gradient) on the device by the per-position
 * caption weights (--weighted_captions), through the host copy `stage`. */
static int weight_rows(run *R, sd_tensor *t, int B)
{
    int64_t W = t->shape[2];
    size_t nb = sd_tensor_nbytes(t);
    int rc = sd_tensor_download(t, R->stage, nb);
    if (rc) return rc;
    for (int b = 0; b < B; b++)
        for (int p = 0; p < R->seqlen; p++) {
            float wgt = R->tokw[(size_t)b * R->seqlen + p];
            if (wgt != 1.0f)
                for (int64_t k = 0; k < W; k++) R->stage[((size_t)b * R->seqlen + p) * W + k] *= wgt;
        }
    return sd_tensor_upload(t, R->stage, nb);
}

/* The text encoders' activation plan for a batch of B prompts (SDXL: both encoders, TE2 with its
 * pooled output). */
sd_nn_plan loop_text_plan(run *R, int64_t B)
{
    if (!R->sdxl) return sd_clip_plan(R->clip, B * R->nchunks, 77, R->c->clip_skip);
    sd_nn_plan a = sd_clip_plan_sdxl(R->clip, B, R->nchunks, 77, 0);
    sd_nn_plan b = sd_clip_plan_sdxl(R->clip2, B, R->nchunks, 77, 1);
    a.saved += b.saved;
    if (b.scratch > a.scratch) a.scratch = b.scratch;
    return a;
}

/* --weighted_captions (§3.4): each weighted run tokenised on its own, weights per token, framed and
 * chunked like the plain ids; the weight of context position p (1 .. n·75) is that of token p − 1,
 * 1 at BOS/EOS/padding. */
static int weighted_ids(run *R, const char *text, int b)
{
    sd_weighted_piece *pc = NULL;
    int np = 0;
    int rc = sd_weighted_parse(text, &pc, &np);
    if (rc) return rc;
    int L = R->nchunks * 75;
    int32_t *toks = malloc((size_t)(L + 1) * sizeof *toks);
    float *w = malloc((size_t)(L + 1) * sizeof *w);
    size_t n = 0;
    int trunc = 0;
    if (!toks || !w) rc = sd_err(SD_ENOMEM, "out of memory");
    for (int i = 0; i < np && !rc; i++) {
        int32_t *ids = NULL;
        size_t m = 0;
        rc = sd_clip_tokenizer_encode(R->tok, pc[i].text, strlen(pc[i].text), 0, &ids, &m);
        for (size_t k = 0; k < m && !rc; k++) {
            if (n < (size_t)L) {
                toks[n] = ids[k];
                w[n++] = pc[i].weight;
            } else {
                trunc = 1;
            }
        }
        free(ids);
    }
    sd_weighted_free(pc, np);
    if (!rc) {
        int nch = 0, t2 = 0;
        rc = sd_clip_frame_ids(toks, n, R->c->max_token_length, R->pad, R->ids + (size_t)b * R->nchunks * 77, &nch, &t2);
        if (!rc && R->sdxl)
            rc = sd_clip_frame_ids(toks, n, R->c->max_token_length, SD_CLIP_PAD_SD2,
                                   R->ids2 + (size_t)b * R->nchunks * 77, &nch, &t2);
        float *tw = R->tokw + (size_t)b * R->seqlen;
        for (int p = 0; p < R->seqlen; p++) tw[p] = 1.0f;
        for (size_t k = 0; k < n && (int)k + 1 < R->seqlen; k++) tw[k + 1] = w[k];
    }
    if (trunc && !R->warned_trunc) {
        sd_warn("Prompt was truncated. Try to shorten the prompt or increase max_embeddings_multiples");
        R->warned_trunc = 1;
    }
    free(toks);
    free(w);
    return rc;
}

/* Token ids of the processed captions of one batch of d (random choices from the streams
 * (seed, step, b, SD_RNG_CAPTION)). plain (validation): no shuffle, caption or tag dropout, token
 * warm-up. */
int loop_encode_captions(run *R, const sd_train_data *d, const int64_t *idx, int B, uint64_t seed, uint32_t step,
                           int64_t epoch1, int64_t gstep, int plain)
{
    for (int b = 0; b < B; b++) {
        const sd_train_sample *s = &d->s[idx[b]];
        sd_rng rng = sd_rng_key(seed, step, (uint32_t)b, SD_RNG_CAPTION);
        sd_caption_opts o = s->cap;
        double tw = s->token_warmup_step_f;
        o.token_warmup_step = tw <= 0 ? 0 : tw < 1 ? (int64_t)(tw * (double)R->max_steps) : (int64_t)tw;
        if (plain) {
            o.shuffle = 0;
            o.dropout_rate = 0;
            o.dropout_every_n_epochs = 0;
            o.tag_dropout_rate = 0;
            o.token_warmup_step = 0;
        }
        char *text = NULL;
        int rc = sd_caption_process(&o, s->caption, epoch1, gstep, &rng, &text);
        if (rc) return rc;
        int nch = 0;
        if (R->have_ti) {   /* templates / token expansion, the new tokens' ids */
            char *t2 = NULL;
            rc = sd_ti_caption(&R->ti, text, &rng, &t2);
            free(text);
            if (!rc) rc = sd_ti_frame(&R->ti, R->tok, t2, R->c->max_token_length, R->pad,
                                      R->ids + (size_t)b * R->nchunks * 77, &nch, NULL);
            /* SDXL TE2: the same ids (both tables have the rows) framed with its pad id 0 */
            if (!rc && R->sdxl)
                rc = sd_ti_frame(&R->ti, R->tok, t2, R->c->max_token_length, SD_CLIP_PAD_SD2,
                                 R->ids2 + (size_t)b * R->nchunks * 77, &nch, NULL);
            free(t2);
            if (rc) return rc;
            continue;
        }
        if (!R->c->weighted_captions) {
            rc = sd_clip_tokenizer_frame(R->tok, text, strlen(text), R->c->max_token_length, R->pad,
                                         R->ids + (size_t)b * R->nchunks * 77, &nch);
            /* SDXL TE2: the same tokens framed with its pad id 0 (§3.2) */
            if (!rc && R->sdxl)
                rc = sd_clip_tokenizer_frame(R->tok, text, strlen(text), R->c->max_token_length, SD_CLIP_PAD_SD2,
                                             R->ids2 + (size_t)b * R->nchunks * 77, &nch);
            free(text);
            if (rc) return rc;
            continue;
        }
        rc = weighted_ids(R, text, b);
        free(text);
        if (rc) return rc;
    }
    return SD_OK;
}

/* SDXL: the UNet's vector input *vecp [B, P + 1536] = cat(pooled (R->t_pool), the size embedding of
 * R->sizes). */
static int sdxl_vector(run *R, int B, sd_tensor *vecp)
{
    for (int b = 0; b < B; b++) {
        const int *z = R->sizes + 6 * b;
        sd_sdxl_size_embedding(R->semb + (size_t)b * SD_SDXL_SIZE_EMB_DIM, z[0], z[1], z[2], z[3], z[4], z[5]);
    }
    sd_tensor se = dview(&R->t_semb, 2, (int64_t[]){ B, SD_SDXL_SIZE_EMB_DIM });
    sd_tensor pool = dview(&R->t_pool, 2, (int64_t[]){ B, R->P });
    *vecp = dview(&R->t_vec, 2, (int64_t[]){ B, R->ADM });
    int rc = sd_tensor_upload(&se, R->semb, (size_t)B * SD_SDXL_SIZE_EMB_DIM * sizeof(float));
    if (!rc) rc = sd_sdxl_vector(&R->ctx, vecp, &pool, &se);
    return rc;
}

/* SDXL encoders (§3.3): TE1 layer 11 (ids R->ids) into t_hs1, TE2 penultimate and pooled (ids
 * R->ids2) into t_hs2 / t_pool; the context cat(hs1, hs2) into *ctxt. */
static int text_forward_sdxl(run *R, int B, sd_arena *save, sd_tensor *ctxt)
{
    int64_t nid = (int64_t)B * R->nchunks * 77;
    sd_tensor ids1 = dview(&R->t_ids, 1, &nid), ids2 = dview(&R->t_ids2, 1, &nid);
    int rc = sd_tensor_upload(&ids1, R->ids, (size_t)nid * sizeof(int32_t));
    if (!rc) rc = sd_tensor_upload(&ids2, R->ids2, (size_t)nid * sizeof(int32_t));
    if (rc) return rc;
    sd_tensor hs1 = dview(&R->t_hs1, 3, (int64_t[]){ B, R->seqlen, R->W1 });
    sd_tensor hs2 = dview(&R->t_hs2, 3, (int64_t[]){ B, R->seqlen, R->W2 });
    sd_tensor pool = dview(&R->t_pool, 2, (int64_t[]){ B, R->P });
    if (R->nchunks == 1) {
        ids1 = dview(&R->t_ids, 2, (int64_t[]){ B, 77 });
        ids2 = dview(&R->t_ids2, 2, (int64_t[]){ B, 77 });
        rc = sd_clip_forward_sdxl(&R->ctx, R->clip, save, &hs1, NULL, &ids1);
        if (!rc) rc = sd_clip_forward_sdxl(&R->ctx, R->clip2, save, &hs2, &pool, &ids2);
    } else {
        int64_t rows = (int64_t)B * R->nchunks;
        ids1 = dview(&R->t_ids, 3, (int64_t[]){ B, R->nchunks, 77 });
        ids2 = dview(&R->t_ids2, 3, (int64_t[]){ B, R->nchunks, 77 });
        sd_tensor w1 = dview(&R->t_work1, 3, (int64_t[]){ rows, 77, R->W1 });
        sd_tensor w2 = dview(&R->t_work2, 3, (int64_t[]){ rows, 77, R->W2 });
        rc = sd_clip_forward_sdxl_chunks(&R->ctx, R->clip, save, &hs1, NULL, &w1, &ids1);
        if (!rc) rc = sd_clip_forward_sdxl_chunks(&R->ctx, R->clip2, save, &hs2, &pool, &w2, &ids2);
    }
    if (rc) return rc;
    const sd_tensor *xs[2] = { &hs1, &hs2 };
    return sd_op_concat(&R->ctx, ctxt, xs, 2, 2);
}

/* --cache_text_encoder_outputs: the context and pooled output of a batch from the samples' cached
 * arrays (weights of --weighted_captions already applied). */
static int text_from_cache(run *R, const sd_train_data *d, const int64_t *idx, int B, sd_tensor *ctxt)
{
    int64_t Wc = R->W1 + R->W2, T = R->seqlen;
    for (int b = 0; b < B; b++) {
        const sd_train_sample *s = &d->s[idx[b]];
        for (int64_t p = 0; p < T; p++) {
            float *row = R->stage + ((size_t)b * T + p) * Wc;
            memcpy(row, s->te_hs1 + p * R->W1, (size_t)R->W1 * sizeof(float));
            memcpy(row + R->W1, s->te_hs2 + p * R->W2, (size_t)R->W2 * sizeof(float));
        }
    }
    int rc = sd_tensor_upload(ctxt, R->stage, (size_t)B * T * Wc * sizeof(float));
    if (rc) return rc;
    for (int b = 0; b < B; b++)
        memcpy(R->stage + (size_t)b * R->P, d->s[idx[b]].te_pool, (size_t)R->P * sizeof(float));
    sd_tensor pool = dview(&R->t_pool, 2, (int64_t[]){ B, R->P });
    return sd_tensor_upload(&pool, R->stage, (size_t)B * R->P * sizeof(float));
}

/* The text encoder(s) over the token ids of a batch of B (R->ids, R->tokw; SDXL also R->ids2) into
 * *ctxt (R->t_ctx): [B, seqlen, context width], --weighted_captions weights applied; SDXL: the
 * UNet's vector into *vecp (R->t_vec; the size conditioning from R->sizes), else *vecp is NULL.
 * d/idx: the batch's samples (for cached text-encoder outputs). save: the arena (training) or NULL. */
int loop_text_forward(run *R, const sd_train_data *d, const int64_t *idx, int B, sd_arena *save, sd_tensor *ctxt,
                        const sd_tensor **vecp)
{
    sd_train_config *c = R->c;
    int64_t W = R->cfg.unet.context_dim;
    sd_tensor ids;
    int rc;
    *ctxt = dview(&R->t_ctx, 3, (int64_t[]){ B, R->seqlen, W });
    *vecp = NULL;
    if (R->sdxl) {
        if (R->te_cached) {
            rc = text_from_cache(R, d, idx, B, ctxt);
        } else {
            rc = text_forward_sdxl(R, B, save, ctxt);
            if (!rc && c->weighted_captions) rc = weight_rows(R, ctxt, B);
        }
        if (!rc) rc = sdxl_vector(R, B, &R->vec_view);
        if (!rc) *vecp = &R->vec_view;
        return rc;
    }
    int64_t nid = (int64_t)B * R->nchunks * 77;
    ids = dview(&R->t_ids, 1, &nid);
    rc = sd_tensor_upload(&ids, R->ids, (size_t)nid * sizeof(int32_t));
    if (rc) return rc;
    if (R->nchunks == 1) {
        ids = dview(&R->t_ids, 2, (int64_t[]){ B, 77 });
        rc = sd_clip_forward(&R->ctx, R->clip, save, ctxt, &ids, c->clip_skip);
    } else {
        ids = dview(&R->t_ids, 3, (int64_t[]){ B, R->nchunks, 77 });
        sd_tensor hid = dview(&R->t_hidden, 3, (int64_t[]){ (int64_t)B * R->nchunks, 77, W });
        rc = sd_clip_forward_chunks(&R->ctx, R->clip, save, ctxt, &hid, &ids, c->clip_skip);
    }
    if (rc) return rc;
    if (c->weighted_captions) return weight_rows(R, ctxt, B);
    return SD_OK;
}

/* --cache_text_encoder_outputs (§4.8): TE1's and TE2's outputs for every sample of d, once, before
 * training (captions are deterministic: loop_check_family refused the random options), weighted
 * captions' weights applied. With --cache_text_encoder_outputs_to_disk each sample's
 * <image path without extension>_te_outputs.npz (the latent file's path for a record without an
 * image) is used when it holds the three arrays with this run's shapes, and written otherwise. */
int loop_cache_te_outputs(run *R, sd_train_data *d, const char *what)
{
    size_t todo = 0;
    for (size_t i = 0; i < d->n; i++) todo += !d->s[i].te_hs1;
    if (!todo) return SD_OK;
    int disk = R->c->cache_text_encoder_outputs_to_disk;
    int64_t T = R->seqlen, Wc = R->W1 + R->W2;
    sd_progress pb;
    sd_progress_begin(&pb, "caching text encoder outputs", (int64_t)todo);
    long reused = 0, written = 0;
    int rc = SD_OK;
    for (size_t i = 0; i < d->n && !rc; i++) {
        sd_train_sample *s = &d->s[i];
        if (s->te_hs1) continue;
        char path[8192];
        if (disk) {
            const char *src = s->image ? s->image : s->latents;
            rc = sd_te_cache_name(path, sizeof path, src);
            if (rc < 0) break;
            rc = SD_OK;
            sd_te_cache tc;
            memset(&tc, 0, sizeof tc);
            int r = sd_te_cache_read(path, &tc);
            if (r == SD_OK && tc.tokens == T && tc.w1 == R->W1 && tc.w2 == R->W2 && tc.pool == R->P) {
                s->te_hs1 = tc.hidden1;
                s->te_hs2 = tc.hidden2;
                s->te_pool = tc.pool2;
                reused++;
                sd_progress_update(&pb, 1);
                continue;
            }
            if (r == SD_OK) {
                sd_debug("%s: shapes [%lld, %lld] [%lld, %lld] [%lld] differ from this run's: encoding again", path,
                         (long long)tc.tokens, (long long)tc.w1, (long long)tc.tokens, (long long)tc.w2,
                         (long long)tc.pool);
                sd_te_cache_free(&tc);
            } else if (r != SD_ENOTFOUND && r != SD_EFORMAT) {
                rc = r;
                break;
            } else {
                sd_debug("%s: %s: encoding", path, r == SD_ENOTFOUND ? "no cache file" : sd_errmsg());
            }
        }
        int64_t one = (int64_t)i;
        rc = loop_encode_captions(R, d, &one, 1, R->seed, 0, 1, 0, 1);
        if (rc) break;
        sd_tensor ctxt = dview(&R->t_ctx, 3, (int64_t[]){ 1, T, Wc });
        size_t mark = sd_arena_mark(&R->ctx.scratch);
        rc = text_forward_sdxl(R, 1, NULL, &ctxt);
        if (!rc && R->c->weighted_captions) rc = weight_rows(R, &ctxt, 1);
        sd_arena_reset(&R->ctx.scratch, mark);
        if (rc) break;
        s->te_hs1 = malloc((size_t)(T * R->W1) * sizeof(float));
        s->te_hs2 = malloc((size_t)(T * R->W2) * sizeof(float));
        s->te_pool = malloc((size_t)R->P * sizeof(float));
        if (!s->te_hs1 || !s->te_hs2 || !s->te_pool) {
            rc = sd_err(SD_ENOMEM, "out of memory caching text encoder outputs");
            break;
        }
        rc = sd_tensor_download(&ctxt, R->stage, (size_t)(T * Wc) * sizeof(float));
        if (rc) break;
        for (int64_t p = 0; p < T; p++) {
            memcpy(s->te_hs1 + p * R->W1, R->stage + p * Wc, (size_t)R->W1 * sizeof(float));
            memcpy(s->te_hs2 + p * R->W2, R->stage + p * Wc + R->W1, (size_t)R->W2 * sizeof(float));
        }
        sd_tensor pool = dview(&R->t_pool, 2, (int64_t[]){ 1, R->P });
        rc = sd_tensor_download(&pool, s->te_pool, (size_t)R->P * sizeof(float));
        if (!rc && disk) {
            sd_te_cache tc = { .tokens = T, .w1 = R->W1, .w2 = R->W2, .pool = R->P, .hidden1 = s->te_hs1,
                               .hidden2 = s->te_hs2, .pool2 = s->te_pool };
            rc = sd_te_cache_write(path, &tc);
            if (rc) sd_err_prefix(rc, "%s", path);
            else written++;
        }
        sd_progress_update(&pb, 1);
    }
    sd_progress_end(&pb);
    if (!rc) {
        if (disk) sd_info("text encoder outputs of the %s: %ld files reused, %ld written", what, reused, written);
        else sd_info("text encoder outputs of the %s cached in memory (%zu)", what, todo);
    }
    return rc;
}

/* The text encoders' backward when one trains (R->te_train; else nothing): dctx, the gradient of
 * the context [B, seqlen, W] (SDXL: dvec, that of the UNet's vector) into the encoders' gradients
 * (--weighted_captions weights applied; TI: the token lookups' gradients scattered per token id). */
int loop_text_backward(run *R, int B, sd_tensor dctx, sd_tensor dvec)
{
    sd_train_config *c = R->c;
    int64_t W = R->cfg.unet.context_dim;
    int rc;
    if (R->te_train && R->sdxl) {
        /* SDXL: the context's gradient split between the encoders, the vector's pooled part to TE2 */
        if (c->weighted_captions && (rc = weight_rows(R, &dctx, B))) return rc;
        sd_tensor dh1 = dview(&R->t_dhs1, 3, (int64_t[]){ B, R->seqlen, R->W1 });
        sd_tensor dh2 = dview(&R->t_dhs2, 3, (int64_t[]){ B, R->seqlen, R->W2 });
        sd_tensor dp = dview(&R->t_dpool, 2, (int64_t[]){ B, R->P });
        rc = sd_op_fill(&R->ctx, &dh1, 0.0f);
        if (!rc) rc = sd_op_fill(&R->ctx, &dh2, 0.0f);
        if (!rc) rc = sd_op_fill(&R->ctx, &dp, 0.0f);
        sd_tensor *dxs[2] = { &dh1, &dh2 };
        if (!rc) rc = sd_op_concat_bwd(&R->ctx, dxs, 2, &dctx, 2);
        if (!rc) rc = sd_sdxl_vector_backward(&R->ctx, &dp, &dvec);
        /* the reverse of the forward's order: TE2, then TE1 (TI: with the token lookups' gradients);
           db/ft: an encoder that does not train (sdxl_train.py's learning_rate_te1/te2 of 0) is skipped */
        int bw1 = !R->is_full || R->full.te1_train, bw2 = !R->is_full || R->full.te2_train;
        int64_t rows = (int64_t)B * R->nchunks;
        sd_tensor dt1 = R->have_ti ? dview(&R->t_dtok, 3, (int64_t[]){ rows, 77, R->W1 }) : dh1;
        sd_tensor dt2 = R->have_ti ? dview(&R->t_dtok2, 3, (int64_t[]){ rows, 77, R->W2 }) : dh2;
        if (!rc && R->have_ti) rc = sd_op_fill(&R->ctx, &dt1, 0.0f);
        if (!rc && R->have_ti) rc = sd_op_fill(&R->ctx, &dt2, 0.0f);
        sd_tensor *pt1 = R->have_ti ? &dt1 : NULL, *pt2 = R->have_ti ? &dt2 : NULL;
        if (R->nchunks == 1) {
            if (!rc && bw2) rc = sd_clip_backward_sdxl(&R->ctx, R->clip2, pt2, &dh2, &dp);
            if (!rc && bw1) rc = sd_clip_backward_sdxl(&R->ctx, R->clip, pt1, &dh1, NULL);
        } else {
            if (!rc && bw2) rc = sd_clip_backward_sdxl_chunks(&R->ctx, R->clip2, pt2, &dh2, &dp);
            if (!rc && bw1) rc = sd_clip_backward_sdxl_chunks(&R->ctx, R->clip, pt1, &dh1, NULL);
        }
        if (!rc && R->have_ti) {   /* the gradients of the token lookups, scattered per token id */
            int64_t npos = rows * 77;
            rc = sd_tensor_download(&dt1, R->dtok, (size_t)(npos * R->W1) * sizeof(float));
            if (!rc) rc = sd_ti_accumulate(&R->ti, R->ids, npos, R->dtok);
            if (!rc) rc = sd_tensor_download(&dt2, R->dtok2, (size_t)(npos * R->W2) * sizeof(float));
            if (!rc) rc = sd_ti_accumulate(&R->ti2, R->ids2, npos, R->dtok2);
        }
        return rc;
    }
    if (R->te_train) {
        if (c->weighted_captions && (rc = weight_rows(R, &dctx, B))) return rc;
        int64_t npos = (int64_t)B * R->nchunks * 77;
        sd_tensor dtok = dview(&R->t_dtok, 3, (int64_t[]){ (int64_t)B * R->nchunks, 77, W });
        if (R->have_ti && (rc = sd_op_fill(&R->ctx, &dtok, 0.0f))) return rc;
        if (R->nchunks == 1) rc = sd_clip_backward(&R->ctx, R->clip, R->have_ti ? &dtok : NULL, &dctx);
        else rc = sd_clip_backward_chunks(&R->ctx, R->clip, R->have_ti ? &dtok : NULL, &dctx);
        if (rc) return rc;
        if (R->have_ti) {   /* the gradient of the token lookup, scattered per token id */
            rc = sd_tensor_download(&dtok, R->dtok, (size_t)(npos * W) * sizeof(float));
            if (!rc) rc = sd_ti_accumulate(&R->ti, R->ids, npos, R->dtok);
            if (rc) return rc;
        }
    }
    return SD_OK;
}
