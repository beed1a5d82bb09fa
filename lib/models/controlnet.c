/* ControlNet (diffusers ControlNetModel / cldm ControlNet) over the UNet's encoder half (see controlnet.h). */
#include "models/controlnet.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/rng.h"

#define TRY(x) do { rc = (x); if (rc) goto out; } while (0)

static const int64_t hint_ch[4] = { 16, 32, 96, 256 };

static size_t abytes(int64_t n) { return ((size_t)n * sizeof(float) + 63) & ~(size_t)63; }
static size_t zmax(size_t a, size_t b) { return a > b ? a : b; }
static int64_t numel4(const int64_t *s) { return s[0] * s[1] * s[2] * s[3]; }

static int add_map(sd_controlnet *cn, const char *ldm, const char *diff)
{
    char **a = realloc(cn->map_ldm, (cn->nmap + 1) * sizeof *a);
    if (!a) return sd_err(SD_ENOMEM, "controlnet: out of memory");
    cn->map_ldm = a;
    char **b = realloc(cn->map_diff, (cn->nmap + 1) * sizeof *b);
    if (!b) return sd_err(SD_ENOMEM, "controlnet: out of memory");
    cn->map_diff = b;
    char *x = strdup(ldm), *y = strdup(diff);
    if (!x || !y) {
        free(x);
        free(y);
        return sd_err(SD_ENOMEM, "controlnet: out of memory");
    }
    cn->map_ldm[cn->nmap] = x;
    cn->map_diff[cn->nmap++] = y;
    return SD_OK;
}

/* conv k of the conditioning embedding: input / output channels and stride */
static void hint_geom(int k, int64_t mc, int64_t *cin, int64_t *cout, int *stride)
{
    if (k == 0) *cin = 3, *cout = hint_ch[0], *stride = 1;
    else if (k == SD_CONTROLNET_HINT_CONVS - 1) *cin = hint_ch[3], *cout = mc, *stride = 1;
    else {
        int i = (k - 1) / 2;   /* blocks.(k-1): pair i */
        *cin = hint_ch[i];
        *cout = (k - 1) % 2 ? hint_ch[i + 1] : hint_ch[i];
        *stride = (k - 1) % 2 ? 2 : 1;
    }
}

int sd_controlnet_init(sd_controlnet *cn, sd_params *r, const sd_unet_config *cfg)
{
    memset(cn, 0, sizeof *cn);
    if (cfg->adm_in_channels > 0)
        return sd_err(SD_EUNSUPPORTED, "controlnet: SDXL ControlNet (sdxl_train_control_net.py) is not supported yet");
    int rc = sd_unet_init_encoder(&cn->enc, r, NULL, cfg);
    if (rc) return rc;
    cn->params = r;
    cn->n_res = cn->enc.n_in + 1;
    char key[96], ldm[96], diff[96];
    int64_t mc = cfg->model_channels;
    cn->zero = calloc((size_t)cn->enc.n_in, sizeof *cn->zero);
    cn->res = calloc((size_t)cn->n_res, sizeof *cn->res);
    cn->dout = calloc((size_t)cn->n_res, sizeof *cn->dout);
    if (!cn->zero || !cn->res || !cn->dout) {
        rc = sd_err(SD_ENOMEM, "controlnet: out of memory");
        goto out;
    }
    for (size_t i = 0; i < cn->enc.nmap; i++) TRY(add_map(cn, cn->enc.map_ldm[i], cn->enc.map_diff[i]));
    for (int k = 0; k < SD_CONTROLNET_HINT_CONVS; k++) {
        int64_t ci, co;
        int s;
        hint_geom(k, mc, &ci, &co, &s);
        snprintf(key, sizeof key, "input_hint_block.%d", 2 * k);
        TRY(sd_conv2d_init(&cn->hint[k], r, key, ci, co, 3, 3, sd_conv2d_geom_make(s, 1), SD_NN_BIAS));
        snprintf(ldm, sizeof ldm, "input_hint_block.%d.", 2 * k);
        if (k == 0) snprintf(diff, sizeof diff, "controlnet_cond_embedding.conv_in.");
        else if (k == SD_CONTROLNET_HINT_CONVS - 1) snprintf(diff, sizeof diff, "controlnet_cond_embedding.conv_out.");
        else snprintf(diff, sizeof diff, "controlnet_cond_embedding.blocks.%d.", k - 1);
        TRY(add_map(cn, ldm, diff));
    }
    for (int i = 0; i < cn->enc.n_in; i++) {
        int64_t ch = cn->enc.blocks[i].cout;
        snprintf(key, sizeof key, "zero_convs.%d.0", i);
        TRY(sd_conv2d_init(&cn->zero[i], r, key, ch, ch, 1, 1, sd_conv2d_geom_make(1, 0), SD_NN_BIAS));
        snprintf(ldm, sizeof ldm, "zero_convs.%d.0.", i);
        snprintf(diff, sizeof diff, "controlnet_down_blocks.%d.", i);
        TRY(add_map(cn, ldm, diff));
    }
    int64_t mch = cn->enc.blocks[cn->enc.n_in].cout;
    TRY(sd_conv2d_init(&cn->mid_out, r, "middle_block_out.0", mch, mch, 1, 1, sd_conv2d_geom_make(1, 0), SD_NN_BIAS));
    TRY(add_map(cn, "middle_block_out.0.", "controlnet_mid_block."));
out:
    if (rc) sd_controlnet_free(cn);
    return rc;
}

void sd_controlnet_free(sd_controlnet *cn)
{
    if (!cn) return;
    sd_unet_free(&cn->enc);
    free(cn->zero);
    free(cn->res);
    free(cn->dout);
    for (size_t i = 0; i < cn->nmap; i++) {
        free(cn->map_ldm[i]);
        free(cn->map_diff[i]);
    }
    free(cn->map_ldm);
    free(cn->map_diff);
    memset(cn, 0, sizeof *cn);
}

static int fill_uniform(sd_param *p, const sd_rng *r, uint64_t off, float bound)
{
    if (p->value.dtype != SD_F32 || p->value.device != SD_DEV_CPU)
        return sd_err(SD_ESTATE, "controlnet: %s must be f32 on the host to initialise", p->key);
    float *v = p->value.data;
    int64_t n = sd_tensor_numel(&p->value);
    int rc = sd_rng_fill_uniform(r, off, v, (size_t)n);
    for (int64_t i = 0; !rc && i < n; i++) v[i] = (2.0f * v[i] - 1.0f) * bound;
    return rc;
}

int sd_controlnet_init_from_unet(sd_ctx *ctx, sd_controlnet *cn, const sd_unet *unet, uint64_t seed)
{
    int rc = SD_OK;
    for (size_t i = 0; i < sd_params_count(cn->params); i++) {
        sd_param *p = sd_params_at(cn->params, i);
        if (!strncmp(p->key, "input_hint_block.", 17) || !strncmp(p->key, "zero_convs.", 11) ||
            !strncmp(p->key, "middle_block_out.", 17)) {
            if ((rc = sd_op_fill(ctx, &p->value, 0.0f))) return rc;
            continue;
        }
        if (strncmp(p->key, "time_embed.", 11) && strncmp(p->key, "input_blocks.", 13) &&
            strncmp(p->key, "middle_block.", 13))
            continue;   /* not registered by the encoder */
        char k2[320];
        snprintf(k2, sizeof k2, "%s%s", unet->prefix, p->key);
        sd_param *q = sd_params_find(unet->params, k2);
        if (!q) return sd_err(SD_ENOTFOUND, "controlnet: the UNet has no '%s'", k2);
        if (sd_tensor_numel(&q->value) != sd_tensor_numel(&p->value))
            return sd_err(SD_EFORMAT, "controlnet: '%s' has another size in the UNet", k2);
        if ((rc = sd_op_convert(ctx, &p->value, &q->value))) return rc;
    }
    for (int k = 0; k < SD_CONTROLNET_HINT_CONVS - 1; k++) {
        sd_conv2d *c = &cn->hint[k];
        float bound = 1.0f / sqrtf((float)(c->cin * c->kh * c->kw));
        sd_rng r = sd_rng_key(seed, 0, (uint32_t)k, SD_RNG_INIT);
        if ((rc = fill_uniform(c->w, &r, 0, bound))) return rc;
        if ((rc = fill_uniform(c->b, &r, (uint64_t)sd_tensor_numel(&c->w->value), bound))) return rc;
    }
    return rc;
}

int sd_controlnet_name_to_diffusers(const sd_controlnet *cn, const char *ldm, char *out, size_t n)
{
    for (size_t i = 0; i < cn->nmap; i++) {
        size_t fl = strlen(cn->map_ldm[i]);
        if (strncmp(ldm, cn->map_ldm[i], fl)) continue;
        if (strlen(cn->map_diff[i]) + strlen(ldm + fl) + 1 > n) return sd_err(SD_ERANGE, "controlnet: name too long");
        snprintf(out, n, "%s%s", cn->map_diff[i], ldm + fl);
        return SD_OK;
    }
    return sd_err(SD_ENOTFOUND, "controlnet: no tensor '%s' in this ControlNet", ldm);
}

int sd_controlnet_load(sd_controlnet *cn, const sd_safetensors *st)
{
    const sd_st_tensor *t;
    unsigned flags = SD_LOAD_SQUEEZE_1X1;
    if (sd_safetensors_get(st, "controlnet_cond_embedding.conv_in.weight", &t) == SD_OK) {
        sd_key_map *m = calloc(cn->nmap + 1, sizeof *m);
        if (!m) return sd_err(SD_ENOMEM, "controlnet: out of memory");
        for (size_t i = 0; i < cn->nmap; i++) m[i].ours = cn->map_ldm[i], m[i].file = cn->map_diff[i];
        m[cn->nmap].ours = "\x01";   /* every file tensor must be claimed */
        m[cn->nmap].file = "";
        int rc = sd_params_load_safetensors(cn->params, st, m, cn->nmap + 1, flags | SD_LOAD_MAPPED_ONLY, NULL);
        free(m);
        return rc;
    }
    const char *pre = sd_safetensors_get(st, "control_model.input_hint_block.0.weight", &t) == SD_OK ? "control_model." : "";
    if (!*pre && sd_safetensors_get(st, "input_hint_block.0.weight", &t) != SD_OK)
        return sd_err(SD_EFORMAT, "not a ControlNet file: no input_hint_block.0.weight (ldm names) or "
                      "controlnet_cond_embedding.conv_in.weight (Diffusers names)");
    sd_key_map m = { "", pre };
    return sd_params_load_safetensors(cn->params, st, &m, 1, flags, NULL);
}

int sd_controlnet_save(const sd_controlnet *cn, const char *path, sd_st_dtype dtype)
{
    size_t n = sd_params_count(cn->params);
    float **bufs = calloc(n ? n : 1, sizeof *bufs);
    sd_safetensors_writer *w = NULL;
    int rc = bufs ? sd_safetensors_writer_new(&w) : sd_err(SD_ENOMEM, "controlnet: out of memory");
    for (size_t i = 0; i < n && !rc; i++) {
        const sd_param *p = sd_params_at(cn->params, i);
        int64_t ne = sd_tensor_numel(&p->value);
        bufs[i] = malloc((size_t)(ne > 0 ? ne : 1) * sizeof(float));
        if (!bufs[i]) {
            rc = sd_err(SD_ENOMEM, "controlnet: out of memory");
            break;
        }
        if (p->value.dtype == SD_F32) {
            rc = sd_tensor_download(&p->value, bufs[i], (size_t)ne * sizeof(float));
        } else {   /* a half-stored value: to the host, then widened */
            sd_tensor h = { 0 }, f = { 0 };
            rc = sd_tensor_alloc(&h, (sd_dtype)p->value.dtype, p->value.ndim, p->value.shape);
            if (!rc) rc = sd_tensor_download(&p->value, h.data, sd_tensor_nbytes(&h));
            if (!rc) {
                f = sd_tensor_wrap(bufs[i], SD_F32, p->value.ndim, p->value.shape);
                sd_ctx c;
                rc = sd_ctx_init(&c, SD_DEV_CPU, 1, 0);
                if (!rc) rc = sd_op_convert(&c, &f, &h);
                sd_ctx_free(&c);
            }
            sd_tensor_free(&h);
        }
        if (!rc) rc = sd_safetensors_writer_add_f32(w, p->key, dtype, p->value.ndim, p->value.shape, bufs[i]);
    }
    if (!rc) rc = sd_safetensors_writer_write(w, path);
    sd_safetensors_writer_free(w);
    for (size_t i = 0; bufs && i < n; i++) free(bufs[i]);
    free(bufs);
    return rc;
}

/* ---- training ------------------------------------------------------------------------------- */

static void hint_shapes(const sd_controlnet *cn, int k, const int64_t *xs, int64_t *ys)
{
    sd_conv2d_out_shape(&cn->hint[k], xs, ys);
}

sd_nn_plan sd_controlnet_plan(const sd_controlnet *cn, int64_t n, int64_t h, int64_t w, int64_t s)
{
    sd_nn_plan p = sd_unet_plan(&cn->enc, n, h, w, s);
    int64_t xs[4] = { n, 3, 8 * h, 8 * w }, ys[4];
    size_t own = 0, big = 0, child = 0;
    for (int k = 0; k < SD_CONTROLNET_HINT_CONVS; k++) {
        hint_shapes(cn, k, xs, ys);
        sd_nn_plan c = sd_conv2d_plan(&cn->hint[k], xs);
        p.saved += c.saved + abytes(numel4(ys)) * (k < SD_CONTROLNET_HINT_CONVS - 1 ? 2 : 1);
        child = zmax(child, c.scratch);
        if (k < SD_CONTROLNET_HINT_CONVS - 1) big = zmax(big, 2 * abytes(numel4(ys)));
        memcpy(xs, ys, sizeof xs);
    }
    for (int i = 0; i < cn->n_res; i++) {
        const sd_conv2d *c = i < cn->enc.n_in ? &cn->zero[i] : &cn->mid_out;
        /* the block output's shape: channels of block i at its resolution */
        int64_t bs[4] = { n, cn->enc.blocks[i].cout, h, w };
        int down = 0;
        for (int j = 1; j <= i && j < cn->enc.n_in + 1; j++) down += cn->enc.blocks[j].down != NULL;
        bs[2] = h >> down, bs[3] = w >> down;
        sd_nn_plan c2 = sd_conv2d_plan(c, bs);
        p.saved += c2.saved + abytes(numel4(bs));
        own += abytes(numel4(bs));
        child = zmax(child, c2.scratch);
    }
    /* backward: the encoder's dout and d(add0) stay while the encoder runs, then two hint gradients */
    size_t bwd = own + abytes(n * cn->enc.cfg.model_channels * h * w) + zmax(p.scratch, big + child);
    p.scratch = zmax(p.scratch, bwd);
    return p;
}

size_t sd_controlnet_res_bytes(const sd_controlnet *cn, int64_t n, int64_t h, int64_t w)
{
    size_t tot = 0;
    int down = 0;
    for (int i = 0; i < cn->n_res; i++) {
        if (i > 0 && i < cn->enc.n_in && cn->enc.blocks[i].down) down++;
        int64_t bs[4] = { n, cn->enc.blocks[i].cout, h >> down, w >> down };
        tot += abytes(numel4(bs));
    }
    return tot;
}

static int t4(sd_arena *a, sd_tensor *t, const int64_t *s)
{
    int rc = sd_arena_tensor(a, t, SD_F32, 4, s);
    return rc ? sd_err_prefix(rc, "controlnet activations") : SD_OK;
}

int sd_controlnet_forward(sd_ctx *ctx, sd_controlnet *cn, sd_arena *save, const sd_tensor *x, const sd_tensor *t,
                          const sd_tensor *context, const sd_tensor *cond)
{
    if (!save) return sd_err(SD_EINVAL, "controlnet: the forward needs an activation arena");
    if (!x || x->ndim != 4 || !cond || cond->ndim != 4 || cond->shape[0] != x->shape[0] || cond->shape[1] != 3 ||
        cond->shape[2] != 8 * x->shape[2] || cond->shape[3] != 8 * x->shape[3])
        return sd_err(SD_EINVAL, "controlnet: the control image must be [N, 3, 8H, 8W] for latents [N, C, H, W]");
    cn->trained = 0;
    int rc = SD_OK;
    const sd_tensor *a = cond;
    for (int k = 0; k < SD_CONTROLNET_HINT_CONVS; k++) {
        int64_t ys[4];
        hint_shapes(cn, k, a->shape, ys);
        TRY(t4(save, &cn->hy[k], ys));
        TRY(sd_conv2d_forward(ctx, &cn->hint[k], save, &cn->hy[k], a));
        if (k < SD_CONTROLNET_HINT_CONVS - 1) {
            TRY(t4(save, &cn->ha[k], ys));
            TRY(sd_op_act(ctx, SD_ACT_SILU, &cn->ha[k], &cn->hy[k]));
            a = &cn->ha[k];
        }
    }
    memset(&cn->ctl, 0, sizeof cn->ctl);
    cn->ctl.add0 = &cn->hy[SD_CONTROLNET_HINT_CONVS - 1];
    sd_unet_set_control(&cn->enc, &cn->ctl);
    TRY(sd_unet_forward(ctx, &cn->enc, save, NULL, x, t, context, NULL));
    for (int i = 0; i < cn->n_res; i++) {
        const sd_tensor *o = sd_unet_block_output(&cn->enc, i);
        TRY(t4(save, &cn->res[i], o->shape));
        TRY(sd_conv2d_forward(ctx, i < cn->enc.n_in ? &cn->zero[i] : &cn->mid_out, save, &cn->res[i], o));
    }
    cn->trained = 1;
out:
    return rc;
}

int sd_controlnet_backward(sd_ctx *ctx, sd_controlnet *cn, const sd_tensor *dres)
{
    if (!cn->trained) return sd_err(SD_ESTATE, "controlnet: backward without a training forward");
    cn->trained = 0;
    size_t mark = sd_arena_mark(&ctx->scratch);
    int rc = SD_OK;
    for (int i = 0; i < cn->n_res; i++) {
        if (!sd_tensor_same_shape(&dres[i], &cn->res[i])) {
            rc = sd_err(SD_EINVAL, "controlnet: output gradient %d has the wrong shape", i);
            goto out;
        }
        TRY(t4(&ctx->scratch, &cn->dout[i], cn->res[i].shape));
        TRY(sd_op_fill(ctx, &cn->dout[i], 0.0f));
        TRY(sd_conv2d_backward(ctx, i < cn->enc.n_in ? &cn->zero[i] : &cn->mid_out, &cn->dout[i], &dres[i]));
    }
    sd_tensor dh, g, dxk, dpre;
    TRY(t4(&ctx->scratch, &dh, cn->hy[SD_CONTROLNET_HINT_CONVS - 1].shape));
    TRY(sd_op_fill(ctx, &dh, 0.0f));
    memset(&cn->ctl, 0, sizeof cn->ctl);
    cn->ctl.dout = cn->dout;
    cn->ctl.dadd0 = &dh;
    TRY(sd_unet_backward(ctx, &cn->enc, NULL, NULL, NULL, NULL));
    sd_unet_set_control(&cn->enc, NULL);
    /* the conditioning embedding, last conv first (ping-pong buffers P for d(conv input), Q for
       d(pre-activation)); the image gets no gradient */
    int64_t big = 1;
    for (int k = 0; k < SD_CONTROLNET_HINT_CONVS - 1; k++)
        if (sd_tensor_numel(&cn->hy[k]) > big) big = sd_tensor_numel(&cn->hy[k]);
    sd_tensor P, Q;
    TRY(sd_arena_tensor(&ctx->scratch, &P, SD_F32, 1, (int64_t[]){ big }));
    TRY(sd_arena_tensor(&ctx->scratch, &Q, SD_F32, 1, (int64_t[]){ big }));
    g = dh;
    for (int k = SD_CONTROLNET_HINT_CONVS - 1; k > 0; k--) {
        dxk = P, dpre = Q;
        dxk.ndim = dpre.ndim = 4;
        memcpy(dxk.shape, cn->ha[k - 1].shape, sizeof dxk.shape);
        memcpy(dpre.shape, cn->hy[k - 1].shape, sizeof dpre.shape);
        TRY(sd_op_fill(ctx, &dxk, 0.0f));
        TRY(sd_conv2d_backward(ctx, &cn->hint[k], &dxk, &g));
        TRY(sd_op_fill(ctx, &dpre, 0.0f));
        TRY(sd_op_act_bwd(ctx, SD_ACT_SILU, &dpre, &dxk, &cn->hy[k - 1]));
        g = dpre;
    }
    TRY(sd_conv2d_backward(ctx, &cn->hint[0], NULL, &g));
out:
    sd_unet_set_control(&cn->enc, NULL);
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}
