/* SD VAE (see vae.h). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/rng.h"
#include "models/vae.h"

#define VT(x) do { rc = (x); if (rc) goto out; } while (0)

/* prefix + "." + printf(fmt, ...) */
static void vkey(char *buf, size_t n, const char *prefix, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void vkey(char *buf, size_t n, const char *prefix, const char *fmt, ...)
{
    int k = snprintf(buf, n, "%s%s", prefix, *prefix ? "." : "");
    if (k < 0 || (size_t)k >= n) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + k, n - (size_t)k, fmt, ap);
    va_end(ap);
}

/* ---- blocks ------------------------------------------------------------------------------------ */

static int resblock_init(sd_vae_resblock *b, sd_params *r, const char *p, int64_t cin, int64_t cout)
{
    char key[512];
    int rc;
    b->cin = cin;
    b->cout = cout;
    b->has_nin = cin != cout;
    snprintf(key, sizeof key, "%s.norm1", p);
    if ((rc = sd_groupnorm_init(&b->norm1, r, key, cin, 32, 1e-6f, SD_ACT_SILU))) return rc;
    snprintf(key, sizeof key, "%s.conv1", p);
    if ((rc = sd_conv2d_init(&b->conv1, r, key, cin, cout, 3, 3, sd_conv2d_geom_make(1, 1), SD_NN_BIAS))) return rc;
    snprintf(key, sizeof key, "%s.norm2", p);
    if ((rc = sd_groupnorm_init(&b->norm2, r, key, cout, 32, 1e-6f, SD_ACT_SILU))) return rc;
    snprintf(key, sizeof key, "%s.conv2", p);
    if ((rc = sd_conv2d_init(&b->conv2, r, key, cout, cout, 3, 3, sd_conv2d_geom_make(1, 1), SD_NN_BIAS))) return rc;
    if (!b->has_nin) return SD_OK;
    snprintf(key, sizeof key, "%s.nin_shortcut", p);
    return sd_conv2d_init(&b->nin, r, key, cin, cout, 1, 1, sd_conv2d_geom_make(1, 0), SD_NN_BIAS);
}

static int attn_init(sd_vae_attn *a, sd_params *r, const char *p, int64_t c)
{
    char key[512];
    int rc;
    a->c = c;
    snprintf(key, sizeof key, "%s.norm", p);
    if ((rc = sd_groupnorm_init(&a->norm, r, key, c, 32, 1e-6f, SD_ACT_NONE))) return rc;
    sd_linear *l[4] = { &a->q, &a->k, &a->v, &a->proj_out };
    static const char *names[4] = { "q", "k", "v", "proj_out" };
    for (int i = 0; i < 4; i++) {
        snprintf(key, sizeof key, "%s.%s", p, names[i]);
        if ((rc = sd_linear_init(l[i], r, key, c, c, SD_NN_BIAS | SD_NN_CONV1X1))) return rc;
    }
    return SD_OK;
}

static int mid_init(sd_vae_mid *m, sd_params *r, const char *p, int64_t c)
{
    char key[512];
    int rc;
    snprintf(key, sizeof key, "%s.mid.block_1", p);
    if ((rc = resblock_init(&m->block_1, r, key, c, c))) return rc;
    snprintf(key, sizeof key, "%s.mid.attn_1", p);
    if ((rc = attn_init(&m->attn_1, r, key, c))) return rc;
    snprintf(key, sizeof key, "%s.mid.block_2", p);
    return resblock_init(&m->block_2, r, key, c, c);
}

static sd_tensor like(const sd_ctx *ctx, void *p, int ndim, const int64_t *shape)
{
    sd_tensor t = sd_tensor_wrap(p, SD_F32, ndim, shape);
    t.device = (uint8_t)ctx->scratch.device;
    t.device_index = (int16_t)ctx->device_index;
    return t;
}

static int scratch_f32(sd_ctx *ctx, sd_tensor *t, int ndim, const int64_t *shape)
{
    int rc = sd_arena_tensor(&ctx->scratch, t, SD_F32, ndim, shape);
    return rc ? sd_err_prefix(rc, "VAE activations") : SD_OK;
}

static int resblock_forward(sd_ctx *ctx, sd_vae_resblock *b, sd_tensor *y, const sd_tensor *x)
{
    size_t mark = sd_arena_mark(&ctx->scratch);
    const int64_t s_in[4] = { x->shape[0], b->cin, x->shape[2], x->shape[3] };
    const int64_t s_out[4] = { x->shape[0], b->cout, x->shape[2], x->shape[3] };
    sd_tensor a, h, a2;
    int rc;
    VT(scratch_f32(ctx, &a, 4, s_in));
    VT(sd_groupnorm_forward(ctx, &b->norm1, NULL, &a, x));
    VT(scratch_f32(ctx, &h, 4, s_out));
    VT(sd_conv2d_forward(ctx, &b->conv1, NULL, &h, &a));
    VT(scratch_f32(ctx, &a2, 4, s_out));
    VT(sd_groupnorm_forward(ctx, &b->norm2, NULL, &a2, &h));
    VT(sd_conv2d_forward(ctx, &b->conv2, NULL, y, &a2));
    if (b->has_nin) {
        VT(sd_conv2d_forward(ctx, &b->nin, NULL, &h, x));
        VT(sd_op_add(ctx, y, y, &h));
    } else {
        VT(sd_op_add(ctx, y, y, x));
    }
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

static int attn_forward(sd_ctx *ctx, sd_vae_attn *a, sd_tensor *y, const sd_tensor *x)
{
    size_t mark = sd_arena_mark(&ctx->scratch);
    const int64_t B = x->shape[0], C = a->c, H = x->shape[2], W = x->shape[3];
    const int64_t seq[3] = { B, H * W, C };
    sd_tensor n, t, q, k, v, o, lse, t4, q4;
    int rc;
    VT(scratch_f32(ctx, &n, 4, x->shape));
    VT(sd_groupnorm_forward(ctx, &a->norm, NULL, &n, x));
    VT(scratch_f32(ctx, &t4, 4, (const int64_t[]){ B, H, W, C }));
    VT(sd_op_permute(ctx, &t4, &n, (const int[]){ 0, 2, 3, 1 }));
    VT(sd_tensor_reshape(&t4, 3, seq, &t));
    VT(scratch_f32(ctx, &q, 3, seq));
    VT(scratch_f32(ctx, &k, 3, seq));
    VT(scratch_f32(ctx, &v, 3, seq));
    VT(scratch_f32(ctx, &o, 3, seq));
    VT(scratch_f32(ctx, &lse, 3, (const int64_t[]){ B, 1, H * W }));
    VT(sd_linear_forward(ctx, &a->q, NULL, &q, &t));
    VT(sd_linear_forward(ctx, &a->k, NULL, &k, &t));
    VT(sd_linear_forward(ctx, &a->v, NULL, &v, &t));
    sd_attn_args args = { 1, 0.0f, 0 };
    VT(sd_op_attention(ctx, &o, &lse, &q, &k, &v, args));
    VT(sd_linear_forward(ctx, &a->proj_out, NULL, &q, &o));
    VT(sd_tensor_reshape(&q, 4, (const int64_t[]){ B, H, W, C }, &q4));
    VT(sd_op_permute(ctx, y, &q4, (const int[]){ 0, 3, 1, 2 }));
    VT(sd_op_add(ctx, y, y, x));
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

/* ---- init -------------------------------------------------------------------------------------- */

static int in_attn(const sd_vae_config *c, int res)
{
    for (int i = 0; i < c->n_attn; i++)
        if (c->attn_resolutions[i] == res) return 1;
    return 0;
}

static int level_alloc(sd_vae_level *L, int nblock, int attn)
{
    L->nblock = nblock;
    L->nattn = attn ? nblock : 0;
    L->block = calloc((size_t)nblock, sizeof *L->block);
    L->attn = attn ? calloc((size_t)nblock, sizeof *L->attn) : NULL;
    return L->block && (!attn || L->attn) ? SD_OK : sd_err(SD_ENOMEM, "VAE: out of memory");
}

int sd_vae_init(sd_vae *v, sd_params *r, const char *prefix, const sd_vae_config *cfg)
{
    memset(v, 0, sizeof *v);
    int n = cfg->n_mult;
    if (n < 1 || n > SD_CFG_MAX_LEVELS || cfg->ch < 1 || cfg->num_res_blocks < 1 || cfg->z_channels < 1 ||
        cfg->embed_dim < 1 || cfg->in_channels < 1 || cfg->out_ch < 1 || !cfg->double_z)
        return sd_err(SD_EINVAL, "VAE: unsupported configuration (levels %d, ch %d, res blocks %d, z %d, embed %d, "
                      "double_z %d)", n, cfg->ch, cfg->num_res_blocks, cfg->z_channels, cfg->embed_dim, cfg->double_z);
    for (int l = 0; l < n; l++)
        if (cfg->ch_mult[l] < 1 || (cfg->ch * cfg->ch_mult[l]) % 32)
            return sd_err(SD_EINVAL, "VAE: level %d has %d channels (GroupNorm needs a multiple of 32)", l,
                          cfg->ch * cfg->ch_mult[l]);
    if (cfg->ch % 32) return sd_err(SD_EINVAL, "VAE: ch %d is not a multiple of 32", cfg->ch);
    v->cfg = *cfg;
    v->n = n;
    v->factor = (int64_t)1 << (n - 1);
    v->prefix = strdup(prefix ? prefix : "");
    v->enc = calloc((size_t)n, sizeof *v->enc);
    v->dec = calloc((size_t)n, sizeof *v->dec);
    int rc = SD_OK;
    if (!v->prefix || !v->enc || !v->dec) {
        rc = sd_err(SD_ENOMEM, "VAE: out of memory");
        goto out;
    }
    char key[512], p[512];
    const int ch = cfg->ch, nrb = cfg->num_res_blocks;
    /* encoder */
    vkey(key, sizeof key, v->prefix, "encoder.conv_in");
    VT(sd_conv2d_init(&v->enc_conv_in, r, key, cfg->in_channels, ch, 3, 3, sd_conv2d_geom_make(1, 1), SD_NN_BIAS));
    int64_t block_in = ch;
    int res = cfg->resolution;
    for (int l = 0; l < n; l++) {
        sd_vae_level *L = &v->enc[l];
        int64_t block_out = (int64_t)ch * cfg->ch_mult[l];
        VT(level_alloc(L, nrb, in_attn(cfg, res)));
        for (int j = 0; j < nrb; j++) {
            vkey(p, sizeof p, v->prefix, "encoder.down.%d.block.%d", l, j);
            VT(resblock_init(&L->block[j], r, p, block_in, block_out));
            block_in = block_out;
            if (L->nattn) {
                vkey(p, sizeof p, v->prefix, "encoder.down.%d.attn.%d", l, j);
                VT(attn_init(&L->attn[j], r, p, block_in));
            }
        }
        if (l != n - 1) {
            L->has_resample = 1;
            vkey(key, sizeof key, v->prefix, "encoder.down.%d.downsample.conv", l);
            sd_conv2d_geom g = { 2, 0, 0, 1, 1 };
            VT(sd_conv2d_init(&L->down, r, key, block_in, block_in, 3, 3, g, SD_NN_BIAS));
            res /= 2;
        }
    }
    vkey(p, sizeof p, v->prefix, "encoder");
    VT(mid_init(&v->enc_mid, r, p, block_in));
    vkey(key, sizeof key, v->prefix, "encoder.norm_out");
    VT(sd_groupnorm_init(&v->enc_norm_out, r, key, block_in, 32, 1e-6f, SD_ACT_SILU));
    vkey(key, sizeof key, v->prefix, "encoder.conv_out");
    VT(sd_conv2d_init(&v->enc_conv_out, r, key, block_in, 2 * cfg->z_channels, 3, 3, sd_conv2d_geom_make(1, 1), SD_NN_BIAS));
    vkey(key, sizeof key, v->prefix, "quant_conv");
    VT(sd_conv2d_init(&v->quant_conv, r, key, 2 * cfg->z_channels, 2 * cfg->embed_dim, 1, 1, sd_conv2d_geom_make(1, 0), SD_NN_BIAS));
    vkey(key, sizeof key, v->prefix, "post_quant_conv");
    VT(sd_conv2d_init(&v->post_quant_conv, r, key, cfg->embed_dim, cfg->z_channels, 1, 1, sd_conv2d_geom_make(1, 0), SD_NN_BIAS));
    /* decoder */
    block_in = (int64_t)ch * cfg->ch_mult[n - 1];
    res = cfg->resolution >> (n - 1);
    vkey(key, sizeof key, v->prefix, "decoder.conv_in");
    VT(sd_conv2d_init(&v->dec_conv_in, r, key, cfg->z_channels, block_in, 3, 3, sd_conv2d_geom_make(1, 1), SD_NN_BIAS));
    vkey(p, sizeof p, v->prefix, "decoder");
    VT(mid_init(&v->dec_mid, r, p, block_in));
    for (int l = n - 1; l >= 0; l--) {
        sd_vae_level *L = &v->dec[l];
        int64_t block_out = (int64_t)ch * cfg->ch_mult[l];
        VT(level_alloc(L, nrb + 1, in_attn(cfg, res)));
        for (int j = 0; j <= nrb; j++) {
            vkey(p, sizeof p, v->prefix, "decoder.up.%d.block.%d", l, j);
            VT(resblock_init(&L->block[j], r, p, block_in, block_out));
            block_in = block_out;
            if (L->nattn) {
                vkey(p, sizeof p, v->prefix, "decoder.up.%d.attn.%d", l, j);
                VT(attn_init(&L->attn[j], r, p, block_in));
            }
        }
        if (l != 0) {
            L->has_resample = 1;
            vkey(p, sizeof p, v->prefix, "decoder.up.%d.upsample", l);
            VT(sd_upsample_init(&L->up, r, p, block_in, block_in));
            res *= 2;
        }
    }
    vkey(key, sizeof key, v->prefix, "decoder.norm_out");
    VT(sd_groupnorm_init(&v->dec_norm_out, r, key, block_in, 32, 1e-6f, SD_ACT_SILU));
    vkey(key, sizeof key, v->prefix, "decoder.conv_out");
    VT(sd_conv2d_init(&v->dec_conv_out, r, key, block_in, cfg->out_ch, 3, 3, sd_conv2d_geom_make(1, 1), SD_NN_BIAS));
out:
    if (rc) {
        sd_vae_free(v);
        return sd_err_prefix(rc, "VAE");
    }
    return SD_OK;
}

void sd_vae_free(sd_vae *v)
{
    for (int l = 0; l < v->n; l++) {
        if (v->enc) { free(v->enc[l].block); free(v->enc[l].attn); }
        if (v->dec) { free(v->dec[l].block); free(v->dec[l].attn); }
    }
    free(v->enc);
    free(v->dec);
    free(v->prefix);
    memset(v, 0, sizeof *v);
}

/* ---- forward ----------------------------------------------------------------------------------- */

/* Largest activation (elements) of an encode of [B,·,H,W] or a decode of a [B,·,h,w] latent
 * (H, W: image size in both cases), and the largest one at the mid-block resolution. */
static int64_t max_act(const sd_vae *v, int64_t B, int64_t H, int64_t W, int64_t *mid)
{
    const sd_vae_config *c = &v->cfg;
    int64_t best = 0;
    for (int l = 0; l < v->n; l++) {
        int64_t res = B * (H >> l) * (W >> l);
        int m = c->ch_mult[l];
        if (l > 0 && c->ch_mult[l - 1] > m) m = c->ch_mult[l - 1];
        if (l + 1 < v->n && c->ch_mult[l + 1] > m) m = c->ch_mult[l + 1];
        int64_t a = res * c->ch * m;
        if (a > best) best = a;
    }
    int64_t low = B * (H >> (v->n - 1)) * (W >> (v->n - 1));
    int64_t zc = 2 * (c->z_channels > c->embed_dim ? c->z_channels : c->embed_dim);
    if (low * zc > best) best = low * zc;
    *mid = low * c->ch * c->ch_mult[v->n - 1];
    return best;
}

size_t sd_vae_scratch_bytes(const sd_vae *v, int64_t B, int64_t H, int64_t W, int decode)
{
    (void)decode;
    int64_t mid, a = max_act(v, B, H, W, &mid);
    /* two ping-pong buffers, a resblock's three temporaries or an upsample's, attention's six */
    size_t act = ((size_t)a * 4 + 63) & ~(size_t)63, m = ((size_t)mid * 4 + 63) & ~(size_t)63;
    size_t blk = 3 * act > 6 * m + act ? 3 * act : 6 * m + act;
    return 2 * act + blk + 4096;
}

typedef struct vrun {
    void *buf[2];
    int cur;
    int64_t shape[4];
} vrun;

static sd_tensor vcur(const sd_ctx *ctx, vrun *s)
{
    return like(ctx, s->buf[s->cur], 4, s->shape);
}

/* the other buffer with shape [B, c, h, w]; becomes current after vswap() */
static sd_tensor vnext(const sd_ctx *ctx, vrun *s, int64_t c, int64_t h, int64_t w)
{
    return like(ctx, s->buf[s->cur ^ 1], 4, (const int64_t[]){ s->shape[0], c, h, w });
}

static void vswap(vrun *s, const sd_tensor *t)
{
    s->cur ^= 1;
    memcpy(s->shape, t->shape, sizeof s->shape);
}

static int run_level_blocks(sd_ctx *ctx, sd_vae_level *L, vrun *s)
{
    int rc = SD_OK;
    for (int j = 0; j < L->nblock && !rc; j++) {
        sd_tensor x = vcur(ctx, s), y = vnext(ctx, s, L->block[j].cout, s->shape[2], s->shape[3]);
        rc = resblock_forward(ctx, &L->block[j], &y, &x);
        if (rc) break;
        vswap(s, &y);
        if (L->nattn) {
            x = vcur(ctx, s);
            y = vnext(ctx, s, s->shape[1], s->shape[2], s->shape[3]);
            rc = attn_forward(ctx, &L->attn[j], &y, &x);
            if (!rc) vswap(s, &y);
        }
    }
    return rc;
}

static int run_mid(sd_ctx *ctx, sd_vae_mid *m, vrun *s)
{
    sd_tensor x = vcur(ctx, s), y = vnext(ctx, s, s->shape[1], s->shape[2], s->shape[3]);
    int rc = resblock_forward(ctx, &m->block_1, &y, &x);
    if (rc) return rc;
    vswap(s, &y);
    x = vcur(ctx, s);
    y = vnext(ctx, s, s->shape[1], s->shape[2], s->shape[3]);
    if ((rc = attn_forward(ctx, &m->attn_1, &y, &x))) return rc;
    vswap(s, &y);
    x = vcur(ctx, s);
    y = vnext(ctx, s, s->shape[1], s->shape[2], s->shape[3]);
    if ((rc = resblock_forward(ctx, &m->block_2, &y, &x))) return rc;
    vswap(s, &y);
    return SD_OK;
}

static int vrun_init(sd_ctx *ctx, const sd_vae *v, vrun *s, int64_t B, int64_t H, int64_t W)
{
    int64_t mid, a = max_act(v, B, H, W, &mid);
    memset(s, 0, sizeof *s);
    s->shape[0] = B;
    for (int i = 0; i < 2; i++) {
        s->buf[i] = sd_arena_alloc(&ctx->scratch, (size_t)a * sizeof(float));
        if (!s->buf[i])
            return sd_err(SD_ENOMEM, "VAE: scratch arena exhausted (need 2 x %lld bytes for activations, %zu of %zu in use)",
                          (long long)a * 4, ctx->scratch.used, ctx->scratch.cap);
    }
    return SD_OK;
}

int sd_vae_encode(sd_ctx *ctx, sd_vae *v, sd_tensor *moments, const sd_tensor *x)
{
    const sd_vae_config *c = &v->cfg;
    const int64_t f = v->factor;
    if (x->ndim != 4 || x->shape[1] != c->in_channels || x->shape[2] % f || x->shape[3] % f || x->shape[2] < f ||
        x->shape[3] < f)
        return sd_err(SD_EINVAL, "VAE encode: input must be [B, %d, H, W] with H and W multiples of %lld", c->in_channels,
                      (long long)f);
    const int64_t B = x->shape[0], H = x->shape[2], W = x->shape[3];
    if (moments->ndim != 4 || moments->shape[0] != B || moments->shape[1] != 2 * c->embed_dim ||
        moments->shape[2] != H / f || moments->shape[3] != W / f)
        return sd_err(SD_EINVAL, "VAE encode: moments must be [%lld, %d, %lld, %lld]", (long long)B, 2 * c->embed_dim,
                      (long long)(H / f), (long long)(W / f));
    size_t mark = sd_arena_mark(&ctx->scratch);
    vrun s;
    int rc;
    VT(vrun_init(ctx, v, &s, B, H, W));
    sd_tensor y = vnext(ctx, &s, c->ch, H, W);
    VT(sd_conv2d_forward(ctx, &v->enc_conv_in, NULL, &y, x));
    vswap(&s, &y);
    for (int l = 0; l < v->n; l++) {
        sd_vae_level *L = &v->enc[l];
        VT(run_level_blocks(ctx, L, &s));
        if (L->has_resample) {
            sd_tensor xi = vcur(ctx, &s);
            y = vnext(ctx, &s, s.shape[1], s.shape[2] / 2, s.shape[3] / 2);
            VT(sd_conv2d_forward(ctx, &L->down, NULL, &y, &xi));
            vswap(&s, &y);
        }
    }
    VT(run_mid(ctx, &v->enc_mid, &s));
    sd_tensor xi = vcur(ctx, &s);
    y = vnext(ctx, &s, s.shape[1], s.shape[2], s.shape[3]);
    VT(sd_groupnorm_forward(ctx, &v->enc_norm_out, NULL, &y, &xi));
    vswap(&s, &y);
    xi = vcur(ctx, &s);
    y = vnext(ctx, &s, 2 * c->z_channels, s.shape[2], s.shape[3]);
    VT(sd_conv2d_forward(ctx, &v->enc_conv_out, NULL, &y, &xi));
    VT(sd_conv2d_forward(ctx, &v->quant_conv, NULL, moments, &y));
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc ? sd_err_prefix(rc, "VAE encode") : SD_OK;
}

int sd_vae_decode(sd_ctx *ctx, sd_vae *v, sd_tensor *y, const sd_tensor *z)
{
    const sd_vae_config *c = &v->cfg;
    const int64_t f = v->factor;
    if (z->ndim != 4 || z->shape[1] != c->embed_dim)
        return sd_err(SD_EINVAL, "VAE decode: latents must be [B, %d, h, w]", c->embed_dim);
    const int64_t B = z->shape[0], h = z->shape[2], w = z->shape[3];
    if (y->ndim != 4 || y->shape[0] != B || y->shape[1] != c->out_ch || y->shape[2] != h * f || y->shape[3] != w * f)
        return sd_err(SD_EINVAL, "VAE decode: output must be [%lld, %d, %lld, %lld]", (long long)B, c->out_ch,
                      (long long)(h * f), (long long)(w * f));
    size_t mark = sd_arena_mark(&ctx->scratch);
    vrun s;
    int rc;
    VT(vrun_init(ctx, v, &s, B, h * f, w * f));
    sd_tensor t = vnext(ctx, &s, c->z_channels, h, w);
    VT(sd_conv2d_forward(ctx, &v->post_quant_conv, NULL, &t, z));
    vswap(&s, &t);
    sd_tensor xi = vcur(ctx, &s);
    t = vnext(ctx, &s, (int64_t)c->ch * c->ch_mult[v->n - 1], h, w);
    VT(sd_conv2d_forward(ctx, &v->dec_conv_in, NULL, &t, &xi));
    vswap(&s, &t);
    VT(run_mid(ctx, &v->dec_mid, &s));
    for (int l = v->n - 1; l >= 0; l--) {
        sd_vae_level *L = &v->dec[l];
        VT(run_level_blocks(ctx, L, &s));
        if (L->has_resample) {
            xi = vcur(ctx, &s);
            t = vnext(ctx, &s, s.shape[1], s.shape[2] * 2, s.shape[3] * 2);
            VT(sd_upsample_forward(ctx, &L->up, NULL, &t, &xi));
            vswap(&s, &t);
        }
    }
    xi = vcur(ctx, &s);
    t = vnext(ctx, &s, s.shape[1], s.shape[2], s.shape[3]);
    VT(sd_groupnorm_forward(ctx, &v->dec_norm_out, NULL, &t, &xi));
    VT(sd_conv2d_forward(ctx, &v->dec_conv_out, NULL, y, &t));
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc ? sd_err_prefix(rc, "VAE decode") : SD_OK;
}

/* ---- latent distribution ------------------------------------------------------------------------ */

int sd_vae_latent(sd_ctx *ctx, sd_tensor *z, const sd_tensor *moments, const sd_tensor *noise)
{
    (void)ctx;
    if (moments->ndim != 4 || moments->shape[1] % 2 || moments->dtype != SD_F32)
        return sd_err(SD_EINVAL, "VAE latent: moments must be f32 [B, 2·C, h, w]");
    const int64_t B = moments->shape[0], C = moments->shape[1] / 2, hw = moments->shape[2] * moments->shape[3];
    if (z->ndim != 4 || z->shape[0] != B || z->shape[1] != C || z->shape[2] != moments->shape[2] ||
        z->shape[3] != moments->shape[3] || z->dtype != SD_F32)
        return sd_err(SD_EINVAL, "VAE latent: z must be f32 [%lld, %lld, h, w] like the moments", (long long)B, (long long)C);
    if (noise && !sd_tensor_same_shape(noise, z)) return sd_err(SD_EINVAL, "VAE latent: noise must have z's shape");
    size_t nm = sd_tensor_nbytes(moments), nz = sd_tensor_nbytes(z);
    float *m = malloc(nm), *out = malloc(nz), *e = noise ? malloc(nz) : NULL;
    int rc = (!m || !out || (noise && !e)) ? sd_err(SD_ENOMEM, "VAE latent: out of memory") : SD_OK;
    if (!rc) rc = sd_tensor_download(moments, m, nm);
    if (!rc && noise) rc = sd_tensor_download(noise, e, nz);
    if (!rc) {
        for (int64_t b = 0; b < B; b++)
            for (int64_t c = 0; c < C; c++)
                for (int64_t i = 0; i < hw; i++) {
                    int64_t o = (b * C + c) * hw + i;
                    float mean = m[(b * 2 * C + c) * hw + i];
                    if (!noise) {
                        out[o] = mean;
                        continue;
                    }
                    float lv = m[(b * 2 * C + C + c) * hw + i];
                    lv = lv < -30.0f ? -30.0f : lv > 20.0f ? 20.0f : lv;
                    out[o] = mean + expf(0.5f * lv) * e[o];
                }
        rc = sd_tensor_upload(z, out, nz);
    }
    free(m);
    free(out);
    free(e);
    return rc;
}

int sd_vae_noise(float *out, size_t n, uint64_t seed, uint32_t step, uint32_t sample)
{
    sd_rng r = sd_rng_key(seed, step, sample, SD_RNG_LATENT);
    return sd_rng_fill_normal(&r, 0, out, n);
}

/* ---- loading ----------------------------------------------------------------------------------- */

typedef struct keymap {
    char (*s)[2][200];
    size_t n, cap;
} keymap;

static int km_add(keymap *k, const char *prefix, const char *ours, const char *file)
{
    if (k->n == k->cap) {
        size_t cap = k->cap ? 2 * k->cap : 64;
        void *p = realloc(k->s, cap * sizeof *k->s);
        if (!p) return sd_err(SD_ENOMEM, "VAE: out of memory");
        k->s = p;
        k->cap = cap;
    }
    vkey(k->s[k->n][0], sizeof k->s[k->n][0], prefix, "%s", ours);
    snprintf(k->s[k->n][1], sizeof k->s[k->n][1], "%s", file);
    k->n++;
    return SD_OK;
}

/* ldm attention block at `ours` ↔ diffusers `file` */
static int km_attn(keymap *k, const char *prefix, const char *ours, const char *file, int old_names)
{
    static const char *ldm[5] = { "norm.", "q.", "k.", "v.", "proj_out." };
    static const char *dif[2][5] = { { "group_norm.", "to_q.", "to_k.", "to_v.", "to_out.0." },
                                     { "group_norm.", "query.", "key.", "value.", "proj_attn." } };
    int rc = SD_OK;
    for (int i = 0; i < 5 && !rc; i++) {
        char a[200], b[200];
        snprintf(a, sizeof a, "%s%s", ours, ldm[i]);
        snprintf(b, sizeof b, "%s%s", file, dif[old_names][i]);
        rc = km_add(k, prefix, a, b);
    }
    return rc;
}

static int km_resblock(keymap *k, const char *prefix, const char *ours, const char *file)
{
    char a[200], b[200];
    snprintf(a, sizeof a, "%snin_shortcut.", ours);
    snprintf(b, sizeof b, "%sconv_shortcut.", file);
    int rc = km_add(k, prefix, a, b);
    return rc ? rc : km_add(k, prefix, ours, file);
}

static int diffusers_map(const sd_vae *v, keymap *k, int old_names)
{
    int rc = SD_OK;
    char a[200], b[200];
    const char *P = v->prefix;
    for (int l = 0; l < v->n && !rc; l++) {
        const sd_vae_level *L = &v->enc[l];
        for (int j = 0; j < L->nblock && !rc; j++) {
            snprintf(a, sizeof a, "encoder.down.%d.block.%d.", l, j);
            snprintf(b, sizeof b, "encoder.down_blocks.%d.resnets.%d.", l, j);
            rc = km_resblock(k, P, a, b);
            if (!rc && L->nattn) {
                snprintf(a, sizeof a, "encoder.down.%d.attn.%d.", l, j);
                snprintf(b, sizeof b, "encoder.down_blocks.%d.attentions.%d.", l, j);
                rc = km_attn(k, P, a, b, old_names);
            }
        }
        snprintf(a, sizeof a, "encoder.down.%d.downsample.conv.", l);
        snprintf(b, sizeof b, "encoder.down_blocks.%d.downsamplers.0.conv.", l);
        if (!rc && L->has_resample) rc = km_add(k, P, a, b);
    }
    for (int l = 0; l < v->n && !rc; l++) {
        const sd_vae_level *L = &v->dec[l];
        int i = v->n - 1 - l;
        for (int j = 0; j < L->nblock && !rc; j++) {
            snprintf(a, sizeof a, "decoder.up.%d.block.%d.", l, j);
            snprintf(b, sizeof b, "decoder.up_blocks.%d.resnets.%d.", i, j);
            rc = km_resblock(k, P, a, b);
            if (!rc && L->nattn) {
                snprintf(a, sizeof a, "decoder.up.%d.attn.%d.", l, j);
                snprintf(b, sizeof b, "decoder.up_blocks.%d.attentions.%d.", i, j);
                rc = km_attn(k, P, a, b, old_names);
            }
        }
        snprintf(a, sizeof a, "decoder.up.%d.upsample.conv.", l);
        snprintf(b, sizeof b, "decoder.up_blocks.%d.upsamplers.0.conv.", i);
        if (!rc && L->has_resample) rc = km_add(k, P, a, b);
    }
    static const char *part[2] = { "encoder", "decoder" };
    for (int p = 0; p < 2 && !rc; p++) {
        for (int m = 0; m < 2 && !rc; m++) {
            snprintf(a, sizeof a, "%s.mid.block_%d.", part[p], m + 1);
            snprintf(b, sizeof b, "%s.mid_block.resnets.%d.", part[p], m);
            rc = km_add(k, P, a, b);
        }
        snprintf(a, sizeof a, "%s.mid.attn_1.", part[p]);
        snprintf(b, sizeof b, "%s.mid_block.attentions.0.", part[p]);
        if (!rc) rc = km_attn(k, P, a, b, old_names);
        snprintf(a, sizeof a, "%s.norm_out.", part[p]);
        snprintf(b, sizeof b, "%s.conv_norm_out.", part[p]);
        if (!rc) rc = km_add(k, P, a, b);
    }
    /* conv_in, conv_out, quant_conv, post_quant_conv: same names */
    if (!rc) rc = km_add(k, P, "", "");
    return rc;
}

int sd_vae_name_to_diffusers(const sd_vae *v, const char *key, char *out, size_t n)
{
    keymap k = { NULL, 0, 0 };
    int rc = diffusers_map(v, &k, 0);
    size_t best = 0, blen = 0;
    int found = 0;
    for (size_t i = 0; i < k.n && !rc; i++) {
        size_t l = strlen(k.s[i][0]);
        if (!strncmp(key, k.s[i][0], l) && (!found || l > blen)) {
            best = i;
            blen = l;
            found = 1;
        }
    }
    if (!rc && !found) rc = sd_err(SD_ENOTFOUND, "%s: not a VAE parameter", key);
    if (!rc) {
        int w = snprintf(out, n, "%s%s", k.s[best][1], key + blen);
        if (w < 0 || (size_t)w >= n) rc = sd_err(SD_ERANGE, "%s: name too long", key);
    }
    free(k.s);
    return rc;
}

int sd_vae_load(sd_vae *v, sd_params *r, const sd_safetensors *st, sd_layout layout)
{
    const char *path = sd_safetensors_path(st);
    if (layout == SD_LAYOUT_NONE) {
        if (sd_safetensors_find(st, "first_stage_model.encoder.conv_in.weight")) layout = SD_LAYOUT_LDM;
        else if (sd_safetensors_find(st, "encoder.mid_block.resnets.0.conv1.weight")) layout = SD_LAYOUT_DIFFUSERS;
        else if (sd_safetensors_find(st, "encoder.conv_in.weight")) layout = SD_LAYOUT_LDM_BARE;
        else return sd_err(SD_EFORMAT, "%s: no VAE tensors (first_stage_model.*, encoder.*/decoder.*)", path);
    }
    keymap k = { NULL, 0, 0 };
    int rc = SD_OK;
    if (layout == SD_LAYOUT_LDM) {
        rc = km_add(&k, v->prefix, "", "first_stage_model.");
    } else if (layout == SD_LAYOUT_LDM_BARE) {
        static const char *parts[4] = { "encoder.", "decoder.", "quant_conv.", "post_quant_conv." };
        for (int i = 0; i < 4 && !rc; i++) rc = km_add(&k, v->prefix, parts[i], parts[i]);
    } else {
        int old_names = sd_safetensors_find(st, "encoder.mid_block.attentions.0.query.weight") != NULL;
        rc = diffusers_map(v, &k, old_names);
    }
    sd_key_map *map = rc ? NULL : calloc(k.n, sizeof *map);
    if (!rc && !map) rc = sd_err(SD_ENOMEM, "VAE: out of memory");
    if (!rc) {
        for (size_t i = 0; i < k.n; i++) {
            map[i].ours = k.s[i][0];
            map[i].file = k.s[i][1];
        }
        /* single files: tensors of the training loss (first_stage_model.loss.*, the LPIPS /
         * discriminator weights some ldm checkpoints carry) are not part of the model */
        unsigned flags = SD_LOAD_MAPPED_ONLY | SD_LOAD_SQUEEZE_1X1;
        if (layout == SD_LAYOUT_LDM) flags |= SD_LOAD_ALLOW_UNEXPECTED;
        sd_load_report rep;
        rc = sd_params_load_safetensors(r, st, map, k.n, flags, &rep);
        for (size_t i = 0; !rc && i < rep.unexpected; i++)
            if (strncmp(rep.unexpected_keys[i], "first_stage_model.loss.", 23))
                rc = sd_err(SD_EFORMAT, "%s: unexpected VAE tensor '%s' (%zu unexpected)", path, rep.unexpected_keys[i],
                            rep.unexpected);
        sd_load_report_free(&rep);
    }
    free(map);
    free(k.s);
    return rc;
}

/* ---- tiling ------------------------------------------------------------------------------------ */

/* Tile origins along an axis of n positions: 0, stride, ..., the last moved back to n - tile. */
static int tile_origins(int64_t n, int64_t tile, int64_t overlap, int64_t *o, int max)
{
    int k = 0;
    if (tile >= n) {
        o[k++] = 0;
        return k;
    }
    for (int64_t p = 0; k < max; p += tile - overlap) {
        if (p + tile >= n) {
            o[k++] = n - tile;
            break;
        }
        o[k++] = p;
    }
    return k;
}

/* Weight of output row i (of n) of a tile whose overlaps with the previous / next tile are
 * ovp / ovn rows (0: none): linear ramps, never 0. */
static float ramp(int64_t i, int64_t n, int64_t ovp, int64_t ovn)
{
    float w = 1.0f;
    if (ovp > 0 && i < ovp) w = (float)(i + 1) / (float)(ovp + 1);
    if (ovn > 0 && i >= n - ovn) {
        float u = (float)(n - i) / (float)(ovn + 1);
        if (u < w) w = u;
    }
    return w;
}

static int run_tiled(sd_ctx *ctx, sd_vae *v, sd_tensor *out, const sd_tensor *in, int tile, int overlap, int decode)
{
    const int64_t f = v->factor;
    if (tile < 1 || overlap < 0 || overlap >= tile)
        return sd_err(SD_EINVAL, "VAE tiling: tile %d, overlap %d (need 0 <= overlap < tile)", tile, overlap);
    if (!decode && (tile % f || overlap % f))
        return sd_err(SD_EINVAL, "VAE tiling: encode tile %d and overlap %d must be multiples of %lld", tile, overlap,
                      (long long)f);
    if (in->ndim != 4 || out->ndim != 4) return sd_err(SD_EINVAL, "VAE tiling: 4-d tensors expected");
    const int64_t B = in->shape[0], Ci = in->shape[1], Hi = in->shape[2], Wi = in->shape[3];
    const int64_t Co = out->shape[1], Ho = out->shape[2], Wo = out->shape[3];
    if (tile >= Hi && tile >= Wi) return decode ? sd_vae_decode(ctx, v, out, in) : sd_vae_encode(ctx, v, out, in);
    /* output units per input unit: f (decode) or 1/f (encode) */
    if (decode ? (Ho != Hi * f || Wo != Wi * f) : (Hi % f || Wi % f || Ho != Hi / f || Wo != Wi / f))
        return sd_err(SD_EINVAL, "VAE tiling: output shape does not match the input");
    enum { MAXT = 4096 };
    int64_t *oy = malloc(MAXT * sizeof *oy), *ox = malloc(MAXT * sizeof *ox);
    float *hin = malloc(sd_tensor_nbytes(in)), *hout = calloc((size_t)sd_tensor_numel(out), sizeof(float));
    float *wsum = calloc((size_t)(Ho * Wo), sizeof(float));
    int64_t th = tile < Hi ? tile : Hi, tw = tile < Wi ? tile : Wi;
    int64_t oth = decode ? th * f : th / f, otw = decode ? tw * f : tw / f;
    float *tin = malloc((size_t)(B * Ci * th * tw) * sizeof(float)), *tout = malloc((size_t)(B * Co * oth * otw) * sizeof(float));
    int rc = (!oy || !ox || !hin || !hout || !wsum || !tin || !tout) ? sd_err(SD_ENOMEM, "VAE tiling: out of memory") : SD_OK;
    if (!rc) rc = sd_tensor_download(in, hin, sd_tensor_nbytes(in));
    int ny = rc ? 0 : tile_origins(Hi, th, overlap, oy, MAXT), nx = rc ? 0 : tile_origins(Wi, tw, overlap, ox, MAXT);
    for (int ty = 0; ty < ny && !rc; ty++)
        for (int tx = 0; tx < nx && !rc; tx++) {
            for (int64_t b = 0; b < B; b++)
                for (int64_t c = 0; c < Ci; c++)
                    for (int64_t y = 0; y < th; y++)
                        memcpy(tin + ((b * Ci + c) * th + y) * tw, hin + ((b * Ci + c) * Hi + oy[ty] + y) * Wi + ox[tx],
                               (size_t)tw * sizeof(float));
            size_t mark = sd_arena_mark(&ctx->scratch);
            sd_tensor ti, to;
            rc = scratch_f32(ctx, &ti, 4, (const int64_t[]){ B, Ci, th, tw });
            if (!rc) rc = scratch_f32(ctx, &to, 4, (const int64_t[]){ B, Co, oth, otw });
            if (!rc) rc = sd_tensor_upload(&ti, tin, sd_tensor_nbytes(&ti));
            if (!rc) rc = decode ? sd_vae_decode(ctx, v, &to, &ti) : sd_vae_encode(ctx, v, &to, &ti);
            if (!rc) rc = sd_tensor_download(&to, tout, sd_tensor_nbytes(&to));
            sd_arena_reset(&ctx->scratch, mark);
            if (rc) break;
            /* overlaps with the neighbours, in output units */
            int64_t s_num = decode ? f : 1, s_den = decode ? 1 : f;
            int64_t ovt = ty > 0 ? (oy[ty - 1] + th - oy[ty]) * s_num / s_den : 0;
            int64_t ovb = ty + 1 < ny ? (oy[ty] + th - oy[ty + 1]) * s_num / s_den : 0;
            int64_t ovl = tx > 0 ? (ox[tx - 1] + tw - ox[tx]) * s_num / s_den : 0;
            int64_t ovr = tx + 1 < nx ? (ox[tx] + tw - ox[tx + 1]) * s_num / s_den : 0;
            int64_t Y0 = oy[ty] * s_num / s_den, X0 = ox[tx] * s_num / s_den;
            for (int64_t y = 0; y < oth; y++) {
                float wy = ramp(y, oth, ovt, ovb);
                for (int64_t x = 0; x < otw; x++) {
                    float w = wy * ramp(x, otw, ovl, ovr);
                    wsum[(Y0 + y) * Wo + X0 + x] += w;
                    for (int64_t b = 0; b < B; b++)
                        for (int64_t c = 0; c < Co; c++)
                            hout[((b * Co + c) * Ho + Y0 + y) * Wo + X0 + x] += w * tout[((b * Co + c) * oth + y) * otw + x];
                }
            }
        }
    if (!rc) {
        for (int64_t bc = 0; bc < B * Co; bc++)
            for (int64_t i = 0; i < Ho * Wo; i++) hout[bc * Ho * Wo + i] /= wsum[i];
        rc = sd_tensor_upload(out, hout, sd_tensor_nbytes(out));
    }
    free(oy);
    free(ox);
    free(hin);
    free(hout);
    free(wsum);
    free(tin);
    free(tout);
    return rc;
}

int sd_vae_encode_tiled(sd_ctx *ctx, sd_vae *v, sd_tensor *moments, const sd_tensor *x, int tile, int overlap)
{
    return run_tiled(ctx, v, moments, x, tile, overlap, 0);
}

int sd_vae_decode_tiled(sd_ctx *ctx, sd_vae *v, sd_tensor *y, const sd_tensor *z, int tile, int overlap)
{
    return run_tiled(ctx, v, y, z, tile, overlap, 1);
}
