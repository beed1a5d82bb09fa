/* ldm/sgm UNetModel (SD1.x / SD2.x / SDXL base), forward and backward over lib/nn blocks (see unet.h). */
#include "models/unet.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

enum { SUB_CONV_IN = 1, SUB_RES, SUB_RES2, SUB_ST, SUB_DOWN, SUB_UP };

/* Arena bytes of an f32 tensor of n elements (arena blocks are 64-byte aligned). */
static size_t abytes(int64_t n) { return ((size_t)n * sizeof(float) + 63) & ~(size_t)63; }
static size_t zmax(size_t a, size_t b) { return a > b ? a : b; }

static int64_t numel4(const int64_t *s) { return s[0] * s[1] * s[2] * s[3]; }

#define TRY(x) do { rc = (x); if (rc) goto out; } while (0)

/* ---- construction --------------------------------------------------------------------------- */

static int add_map(sd_unet *u, const char *ldm, const char *diff)
{
    char **a = realloc(u->map_ldm, (u->nmap + 1) * sizeof *a);
    if (!a) return sd_err(SD_ENOMEM, "unet: out of memory");
    u->map_ldm = a;
    char **b = realloc(u->map_diff, (u->nmap + 1) * sizeof *b);
    if (!b) return sd_err(SD_ENOMEM, "unet: out of memory");
    u->map_diff = b;
    char *x = strdup(ldm), *y = strdup(diff);
    if (!x || !y) {
        free(x);
        free(y);
        return sd_err(SD_ENOMEM, "unet: out of memory");
    }
    u->map_ldm[u->nmap] = x;
    u->map_diff[u->nmap] = y;
    u->nmap++;
    return SD_OK;
}

static int map_res(sd_unet *u, const char *ldm, const char *diff)
{
    static const char *const parts[6][2] = {
        { "in_layers.0.", "norm1." }, { "in_layers.2.", "conv1." }, { "out_layers.0.", "norm2." },
        { "out_layers.3.", "conv2." }, { "emb_layers.1.", "time_emb_proj." }, { "skip_connection.", "conv_shortcut." },
    };
    int rc = SD_OK;
    for (int i = 0; i < 6 && !rc; i++) {
        char a[128], b[128];
        snprintf(a, sizeof a, "%s%s", ldm, parts[i][0]);
        snprintf(b, sizeof b, "%s%s", diff, parts[i][1]);
        rc = add_map(u, a, b);
    }
    return rc;
}

static int add_layer(sd_unet *u, sd_unet_role role, sd_linear *l, sd_conv2d *c, int conv1x1)
{
    sd_unet_layer *a = realloc(u->layers, (u->nlayers + 1) * sizeof *a);
    if (!a) return sd_err(SD_ENOMEM, "unet: out of memory");
    u->layers = a;
    sd_unet_layer *L = &u->layers[u->nlayers];
    memset(L, 0, sizeof *L);
    const char *wkey = l ? l->w->key : c->w->key;
    size_t pl = strlen(u->prefix), kl = strlen(wkey);
    char *key = strndup(wkey + pl, kl - pl - strlen(".weight"));
    if (!key) return sd_err(SD_ENOMEM, "unet: out of memory");
    L->key = key;
    L->role = role;
    L->linear = l;
    L->conv = c;
    L->in = l ? l->in : c->cin;
    L->out = l ? l->out : c->cout;
    L->kh = l ? 1 : c->kh;
    L->kw = l ? 1 : c->kw;
    L->conv1x1 = conv1x1;
    u->nlayers++;
    return SD_OK;
}

static int res_layers(sd_unet *u, sd_resblock *r)
{
    int rc = add_layer(u, SD_UNET_ROLE_RESBLOCK, NULL, &r->conv1, 0);
    if (!rc) rc = add_layer(u, SD_UNET_ROLE_RESBLOCK, &r->emb, NULL, 0);
    if (!rc) rc = add_layer(u, SD_UNET_ROLE_RESBLOCK, NULL, &r->conv2, 0);
    if (!rc && r->has_skip) rc = add_layer(u, SD_UNET_ROLE_RESBLOCK, NULL, &r->skip, 0);
    return rc;
}

static int st_layers(sd_unet *u, sd_spatial_transformer *s)
{
    int c1 = !s->linear_proj;
    int rc = add_layer(u, SD_UNET_ROLE_TRANSFORMER, &s->proj_in, NULL, c1);
    for (int i = 0; i < s->depth && !rc; i++) {
        sd_transformer_block *t = &s->blocks[i];
        sd_linear *ls[10] = { &t->attn1.q, &t->attn1.k, &t->attn1.v, &t->attn1.out, &t->ff.proj,
                              &t->ff.out, &t->attn2.q, &t->attn2.k, &t->attn2.v, &t->attn2.out };
        for (int j = 0; j < 10 && !rc; j++) rc = add_layer(u, SD_UNET_ROLE_TRANSFORMER, ls[j], NULL, 0);
    }
    if (!rc) rc = add_layer(u, SD_UNET_ROLE_TRANSFORMER, &s->proj_out, NULL, c1);
    return rc;
}

static int new_res(sd_unet *u, sd_resblock **slot, const char *ldm, const char *diff, int64_t cin, int64_t cout)
{
    char key[160];
    sd_resblock *r = *slot = calloc(1, sizeof *r);
    if (!r) return sd_err(SD_ENOMEM, "unet: out of memory");
    snprintf(key, sizeof key, "%s%s", u->prefix, ldm);
    int rc = sd_resblock_init(r, u->params, key, cin, cout, 4 * (int64_t)u->cfg.model_channels);
    char a[128], d[128];
    snprintf(a, sizeof a, "%s.", ldm);
    snprintf(d, sizeof d, "%s.", diff);
    if (!rc) rc = map_res(u, a, d);
    if (!rc) rc = res_layers(u, r);
    return rc;
}

static int new_st(sd_unet *u, sd_unet_block *b, const char *ldm, const char *diff, int64_t ch, int depth)
{
    char key[160];
    int heads, dh;
    sd_unet_config_heads(&u->cfg, (int)ch, &heads, &dh);
    b->st = calloc(1, sizeof *b->st);
    if (!b->st) return sd_err(SD_ENOMEM, "unet: out of memory");
    snprintf(key, sizeof key, "%s%s", u->prefix, ldm);
    int rc = sd_spatial_transformer_init(b->st, u->params, key, ch, heads, dh, depth,
                                         u->cfg.context_dim, u->cfg.use_linear_in_transformer);
    char a[128], d[128];
    snprintf(a, sizeof a, "%s.", ldm);
    snprintf(d, sizeof d, "%s.", diff);
    if (!rc) rc = add_map(u, a, d);
    if (!rc) rc = st_layers(u, b->st);
    return rc;
}

static void add_sub(sd_unet_block *b, int kind)
{
    b->kind[b->nsub++] = kind;
}

static int unet_init(sd_unet *u, sd_params *r, const char *prefix, const sd_unet_config *cfg, int encoder)
{
    memset(u, 0, sizeof *u);
    int rc = sd_unet_config_validate(cfg);
    if (rc) return rc;
    u->cfg = *cfg;
    u->params = r;
    size_t pl = prefix ? strlen(prefix) : 0;
    u->prefix = malloc(pl + 2);
    if (!u->prefix) return sd_err(SD_ENOMEM, "unet: out of memory");
    snprintf(u->prefix, pl + 2, "%s%s", pl ? prefix : "", pl ? "." : "");
    const sd_unet_config *c = &u->cfg;
    int L = c->n_levels;
    int64_t mch = c->model_channels, ted = 4 * mch;
    u->n_in = 1 + (L - 1);
    u->n_out = 0;
    for (int l = 0; l < L; l++) {
        u->n_in += c->num_res_blocks[l];
        u->n_out += c->num_res_blocks[l] + 1;
    }
    if (encoder) u->n_out = 0;
    u->encoder_only = encoder;
    u->nblocks = u->n_in + 1 + u->n_out;
    u->blocks = calloc((size_t)u->nblocks, sizeof *u->blocks);
    u->dhs = calloc((size_t)u->n_in, sizeof *u->dhs);
    u->skips = calloc((size_t)u->n_in, sizeof *u->skips);
    if (!u->blocks || !u->dhs || !u->skips) {
        rc = sd_err(SD_ENOMEM, "unet: out of memory");
        goto out;
    }
    char key[160], ldm[96], diff[96];
    /* time embedding */
    snprintf(key, sizeof key, "%stime_embed.0", u->prefix);
    TRY(sd_linear_init(&u->time1, r, key, mch, ted, SD_NN_BIAS));
    snprintf(key, sizeof key, "%stime_embed.2", u->prefix);
    TRY(sd_linear_init(&u->time2, r, key, ted, ted, SD_NN_BIAS));
    TRY(add_map(u, "time_embed.0.", "time_embedding.linear_1."));
    TRY(add_map(u, "time_embed.2.", "time_embedding.linear_2."));
    TRY(add_layer(u, SD_UNET_ROLE_OTHER, &u->time1, NULL, 0));
    TRY(add_layer(u, SD_UNET_ROLE_OTHER, &u->time2, NULL, 0));
    if (c->adm_in_channels > 0) {
        /* label_emb (sgm num_classes "sequential"): Sequential(Sequential(linear, SiLU, linear)) */
        snprintf(key, sizeof key, "%slabel_emb.0.0", u->prefix);
        TRY(sd_linear_init(&u->label1, r, key, c->adm_in_channels, ted, SD_NN_BIAS));
        snprintf(key, sizeof key, "%slabel_emb.0.2", u->prefix);
        TRY(sd_linear_init(&u->label2, r, key, ted, ted, SD_NN_BIAS));
        TRY(add_map(u, "label_emb.0.0.", "add_embedding.linear_1."));
        TRY(add_map(u, "label_emb.0.2.", "add_embedding.linear_2."));
        TRY(add_layer(u, SD_UNET_ROLE_OTHER, &u->label1, NULL, 0));
        TRY(add_layer(u, SD_UNET_ROLE_OTHER, &u->label2, NULL, 0));
    }
    /* input blocks */
    int chans[1 + SD_CFG_MAX_LEVELS * 65], nch = 0, k = 0;
    sd_unet_block *b = &u->blocks[k];
    snprintf(b->name, sizeof b->name, "input_blocks.0");
    b->skip = -1;
    b->conv_in = calloc(1, sizeof *b->conv_in);
    if (!b->conv_in) { rc = sd_err(SD_ENOMEM, "unet: out of memory"); goto out; }
    snprintf(key, sizeof key, "%sinput_blocks.0.0", u->prefix);
    TRY(sd_conv2d_init(b->conv_in, r, key, c->in_channels, mch, 3, 3, sd_conv2d_geom_make(1, 1), SD_NN_BIAS));
    TRY(add_map(u, "input_blocks.0.0.", "conv_in."));
    TRY(add_layer(u, SD_UNET_ROLE_OTHER, NULL, b->conv_in, 0));
    add_sub(b, SUB_CONV_IN);
    b->cin = c->in_channels;
    b->cout = mch;
    chans[nch++] = (int)mch;
    int64_t ch = mch;
    for (int l = 0; l < L; l++) {
        for (int j = 0; j < c->num_res_blocks[l]; j++) {
            b = &u->blocks[++k];
            snprintf(b->name, sizeof b->name, "input_blocks.%d", k);
            b->skip = -1;
            b->cin = ch;
            snprintf(ldm, sizeof ldm, "input_blocks.%d.0", k);
            snprintf(diff, sizeof diff, "down_blocks.%d.resnets.%d", l, j);
            TRY(new_res(u, &b->res, ldm, diff, ch, (int64_t)c->channel_mult[l] * mch));
            add_sub(b, SUB_RES);
            ch = (int64_t)c->channel_mult[l] * mch;
            if (sd_unet_config_level_has_attn(c, l)) {
                snprintf(ldm, sizeof ldm, "input_blocks.%d.1", k);
                snprintf(diff, sizeof diff, "down_blocks.%d.attentions.%d", l, j);
                TRY(new_st(u, b, ldm, diff, ch, c->transformer_depth[l]));
                add_sub(b, SUB_ST);
            }
            b->cout = ch;
            chans[nch++] = (int)ch;
        }
        if (l != L - 1) {
            b = &u->blocks[++k];
            snprintf(b->name, sizeof b->name, "input_blocks.%d", k);
            b->skip = -1;
            b->cin = b->cout = ch;
            b->down = calloc(1, sizeof *b->down);
            if (!b->down) { rc = sd_err(SD_ENOMEM, "unet: out of memory"); goto out; }
            snprintf(key, sizeof key, "%sinput_blocks.%d.0", u->prefix, k);
            TRY(sd_downsample_init(b->down, r, key, ch, ch));
            snprintf(ldm, sizeof ldm, "input_blocks.%d.0.op.", k);
            snprintf(diff, sizeof diff, "down_blocks.%d.downsamplers.0.conv.", l);
            TRY(add_map(u, ldm, diff));
            TRY(add_layer(u, SD_UNET_ROLE_SAMPLER, NULL, &b->down->op, 0));
            add_sub(b, SUB_DOWN);
            chans[nch++] = (int)ch;
        }
    }
    /* middle block */
    b = &u->blocks[++k];
    snprintf(b->name, sizeof b->name, "middle_block");
    b->skip = -1;
    b->cin = b->cout = ch;
    TRY(new_res(u, &b->res, "middle_block.0", "mid_block.resnets.0", ch, ch));
    add_sub(b, SUB_RES);
    TRY(new_st(u, b, "middle_block.1", "mid_block.attentions.0", ch, c->transformer_depth_middle));
    add_sub(b, SUB_ST);
    TRY(new_res(u, &b->res2, "middle_block.2", "mid_block.resnets.1", ch, ch));
    add_sub(b, SUB_RES2);
    /* output blocks */
    int ob = 0;
    for (int l = encoder ? -1 : L - 1; l >= 0; l--) {
        int up_i = L - 1 - l;
        for (int j = 0; j <= c->num_res_blocks[l]; j++, ob++) {
            b = &u->blocks[++k];
            snprintf(b->name, sizeof b->name, "output_blocks.%d", ob);
            int64_t ich = chans[--nch];
            b->skip = nch;
            b->cin = ch + ich;
            snprintf(ldm, sizeof ldm, "output_blocks.%d.0", ob);
            snprintf(diff, sizeof diff, "up_blocks.%d.resnets.%d", up_i, j);
            TRY(new_res(u, &b->res, ldm, diff, ch + ich, (int64_t)c->channel_mult[l] * mch));
            add_sub(b, SUB_RES);
            ch = (int64_t)c->channel_mult[l] * mch;
            int has_attn = sd_unet_config_level_has_attn(c, l);
            if (has_attn) {
                snprintf(ldm, sizeof ldm, "output_blocks.%d.1", ob);
                snprintf(diff, sizeof diff, "up_blocks.%d.attentions.%d", up_i, j);
                TRY(new_st(u, b, ldm, diff, ch, c->transformer_depth[l]));
                add_sub(b, SUB_ST);
            }
            if (l && j == c->num_res_blocks[l]) {
                b->up = calloc(1, sizeof *b->up);
                if (!b->up) { rc = sd_err(SD_ENOMEM, "unet: out of memory"); goto out; }
                snprintf(key, sizeof key, "%soutput_blocks.%d.%d", u->prefix, ob, 1 + has_attn);
                TRY(sd_upsample_init(b->up, r, key, ch, ch));
                snprintf(ldm, sizeof ldm, "output_blocks.%d.%d.conv.", ob, 1 + has_attn);
                snprintf(diff, sizeof diff, "up_blocks.%d.upsamplers.0.conv.", up_i);
                TRY(add_map(u, ldm, diff));
                TRY(add_layer(u, SD_UNET_ROLE_SAMPLER, NULL, &b->up->conv, 0));
                add_sub(b, SUB_UP);
            }
            b->cout = ch;
        }
    }
    /* out */
    if (!encoder) {
        snprintf(key, sizeof key, "%sout.0", u->prefix);
        TRY(sd_groupnorm_init(&u->out_norm, r, key, mch, 32, 1e-5f, SD_ACT_SILU));
        snprintf(key, sizeof key, "%sout.2", u->prefix);
        TRY(sd_conv2d_init(&u->out_conv, r, key, mch, c->out_channels, 3, 3, sd_conv2d_geom_make(1, 1), SD_NN_BIAS));
        TRY(add_map(u, "out.0.", "conv_norm_out."));
        TRY(add_map(u, "out.2.", "conv_out."));
        TRY(add_layer(u, SD_UNET_ROLE_OTHER, NULL, &u->out_conv, 0));
    }
    /* Diffusers names of the layers */
    for (size_t i = 0; i < u->nlayers; i++) {
        char a[256], d[256];
        snprintf(a, sizeof a, "%s.weight", u->layers[i].key);
        TRY(sd_unet_name_to_diffusers(u, a, d, sizeof d));
        d[strlen(d) - strlen(".weight")] = 0;
        char *s = strdup(d);
        if (!s) { rc = sd_err(SD_ENOMEM, "unet: out of memory"); goto out; }
        u->layers[i].diffusers = s;
    }
out:
    if (rc) sd_unet_free(u);
    return rc;
}

int sd_unet_init(sd_unet *u, sd_params *r, const char *prefix, const sd_unet_config *cfg)
{
    return unet_init(u, r, prefix, cfg, 0);
}

int sd_unet_init_encoder(sd_unet *u, sd_params *r, const char *prefix, const sd_unet_config *cfg)
{
    return unet_init(u, r, prefix, cfg, 1);
}

void sd_unet_set_control(sd_unet *u, const sd_unet_control *c)
{
    u->ctl = c;
}

const sd_tensor *sd_unet_block_output(const sd_unet *u, int i)
{
    if (i < 0 || i > u->n_in) return NULL;
    const sd_unet_block *b = &u->blocks[i];
    return &b->t[b->nsub];
}

void sd_unet_free(sd_unet *u)
{
    if (!u) return;
    for (int i = 0; u->blocks && i < u->nblocks; i++) {
        sd_unet_block *b = &u->blocks[i];
        free(b->conv_in);
        free(b->res);
        free(b->res2);
        if (b->st) sd_spatial_transformer_free(b->st);
        free(b->st);
        free(b->down);
        free(b->up);
    }
    free(u->blocks);
    free(u->dhs);
    free(u->skips);
    for (size_t i = 0; i < u->nlayers; i++) {
        free((char *)u->layers[i].key);
        free((char *)u->layers[i].diffusers);
    }
    free(u->layers);
    for (size_t i = 0; i < u->nmap; i++) {
        free(u->map_ldm[i]);
        free(u->map_diff[i]);
    }
    free(u->map_ldm);
    free(u->map_diff);
    free(u->prefix);
    memset(u, 0, sizeof *u);
}

int sd_unet_set_checkpoint(sd_unet *u, const char *block, int on)
{
    int n = 0;
    for (int i = 0; i < u->nblocks; i++) {
        sd_unet_block *b = &u->blocks[i];
        if (block && strcmp(block, b->name)) continue;
        if (b->res) b->res->checkpoint = on;
        if (b->res2) b->res2->checkpoint = on;
        if (b->st) b->st->checkpoint = on;
        b->checkpoint = on;
        n++;
    }
    if (block && !n) return sd_err(SD_ENOTFOUND, "unet: no block '%s'", block);
    return n;
}

/* ---- sub-layers ----------------------------------------------------------------------------- */

static void sub_out_shape(const sd_unet_block *b, int k, const int64_t *xs, int64_t *ys)
{
    memcpy(ys, xs, 4 * sizeof *ys);
    switch (b->kind[k]) {
    case SUB_CONV_IN: ys[1] = b->conv_in->cout; break;
    case SUB_RES: ys[1] = b->res->cout; break;
    case SUB_DOWN: sd_conv2d_out_shape(&b->down->op, xs, ys); break;
    case SUB_UP: ys[2] = 2 * xs[2]; ys[3] = 2 * xs[3]; break;
    default: break;
    }
}

static sd_nn_plan sub_plan(const sd_unet_block *b, int k, const int64_t *xs, const int64_t *cs)
{
    switch (b->kind[k]) {
    case SUB_CONV_IN: return sd_conv2d_plan(b->conv_in, xs);
    case SUB_RES: return sd_resblock_plan(b->res, xs);
    case SUB_RES2: return sd_resblock_plan(b->res2, xs);
    case SUB_ST: return sd_spatial_transformer_plan(b->st, xs, cs);
    case SUB_DOWN: return sd_downsample_plan(b->down, xs);
    default: return sd_upsample_plan(b->up, xs);
    }
}

static int sub_forward(sd_ctx *ctx, sd_unet_block *b, int k, sd_arena *save, sd_tensor *y, const sd_tensor *x,
                       const sd_tensor *emb, const sd_tensor *context)
{
    switch (b->kind[k]) {
    case SUB_CONV_IN: return sd_conv2d_forward(ctx, b->conv_in, save, y, x);
    case SUB_RES: return sd_resblock_forward(ctx, b->res, save, y, x, emb);
    case SUB_RES2: return sd_resblock_forward(ctx, b->res2, save, y, x, emb);
    case SUB_ST: return sd_spatial_transformer_forward(ctx, b->st, save, y, x, context);
    case SUB_DOWN: return sd_downsample_forward(ctx, b->down, save, y, x);
    default: return sd_upsample_forward(ctx, b->up, save, y, x);
    }
}

static int sub_backward(sd_ctx *ctx, sd_unet_block *b, int k, sd_tensor *dx, const sd_tensor *dy,
                        sd_tensor *demb, sd_tensor *dcontext)
{
    switch (b->kind[k]) {
    case SUB_CONV_IN: return sd_conv2d_backward(ctx, b->conv_in, dx, dy);
    case SUB_RES: return sd_resblock_backward(ctx, b->res, dx, demb, dy);
    case SUB_RES2: return sd_resblock_backward(ctx, b->res2, dx, demb, dy);
    case SUB_ST: return sd_spatial_transformer_backward(ctx, b->st, dx, dcontext, dy);
    case SUB_DOWN: return sd_downsample_backward(ctx, b->down, dx, dy);
    default: return sd_upsample_backward(ctx, b->up, dx, dy);
    }
}

/* ---- planning ------------------------------------------------------------------------------- */

sd_nn_plan sd_unet_plan(const sd_unet *u, int64_t n, int64_t h, int64_t w, int64_t s)
{
    const sd_unet_config *c = &u->cfg;
    int64_t mch = c->model_channels, ted = 4 * mch;
    int64_t cs[3] = { n, s, c->context_dim };
    sd_nn_plan t1 = sd_linear_plan(&u->time1, 2, (int64_t[]){ n, mch }),
               t2 = sd_linear_plan(&u->time2, 2, (int64_t[]){ n, ted });
    size_t own = abytes(n * mch) + 3 * abytes(n * ted);   /* temb, e1, e1a, emb */
    size_t saved = own + t1.saved + t2.saved;   /* own: the UNet's own tensors (kept in inference too) */
    size_t child = zmax(t1.scratch, t2.scratch);
    if (c->adm_in_channels > 0) {
        sd_nn_plan l1 = sd_linear_plan(&u->label1, 2, (int64_t[]){ n, c->adm_in_channels }),
                   l2 = sd_linear_plan(&u->label2, 2, (int64_t[]){ n, ted });
        own += 3 * abytes(n * ted);   /* l1, l1a, label_emb output */
        saved += 3 * abytes(n * ted) + l1.saved + l2.saved;
        child = zmax(child, zmax(l1.scratch, l2.scratch));
    }
    int64_t outs[64 * SD_CFG_MAX_LEVELS + 8][4];
    int64_t cur[4] = { n, c->in_channels, h, w };
    size_t skip_sum = 0, gmax = 0, cmax = 0, bwd_block = 0;
    for (int i = 0; i < u->nblocks; i++) {
        const sd_unet_block *b = &u->blocks[i];
        int64_t xs[4];
        memcpy(xs, cur, sizeof xs);
        if (b->skip >= 0) {
            xs[1] += outs[b->skip][1];
            saved += abytes(numel4(xs));
            own += abytes(numel4(xs));
            cmax = zmax(cmax, abytes(numel4(xs)));
        }
        size_t tmax = 0;
        for (int k = 0; k < b->nsub; k++) {
            int64_t ys[4];
            sub_out_shape(b, k, xs, ys);
            sd_nn_plan p = sub_plan(b, k, xs, cs);
            saved += p.saved + abytes(numel4(ys));
            own += abytes(numel4(ys));
            child = zmax(child, p.scratch);
            tmax = zmax(tmax, abytes(numel4(xs)));
            memcpy(xs, ys, sizeof xs);
        }
        bwd_block = zmax(bwd_block, 2 * tmax);
        memcpy(cur, xs, sizeof cur);
        gmax = zmax(gmax, abytes(numel4(cur)));
        if (i < u->n_in) {
            memcpy(outs[i], cur, sizeof cur);
            skip_sum += abytes(numel4(cur));
            if (u->ctl && u->ctl->down && !u->encoder_only) {   /* the skip plus its residual */
                saved += abytes(numel4(cur));
                own += abytes(numel4(cur));
            }
        }
        if (i == u->n_in && u->ctl && u->ctl->mid && !u->encoder_only) {
            saved += abytes(numel4(cur));
            own += abytes(numel4(cur));
        }
    }
    if (u->encoder_only) {
        sd_nn_plan p = { saved, zmax(own + child, skip_sum + abytes(n * ted) + 2 * gmax + bwd_block + child +
                                                      2 * abytes(n * ted)) };
        return p;
    }
    int64_t os[4] = { n, mch, h, w };
    sd_nn_plan gn = sd_groupnorm_plan(&u->out_norm, 4, os), oc = sd_conv2d_plan(&u->out_conv, os);
    saved += abytes(numel4(os)) + gn.saved + oc.saved;
    own += abytes(numel4(os));
    child = zmax(child, zmax(gn.scratch, oc.scratch));
    sd_nn_plan p;
    p.saved = saved;
    size_t fwd = own + child;   /* inference: the UNet's own tensors in scratch, layers keep nothing */
    size_t bwd = skip_sum + abytes(n * ted) + 2 * gmax + cmax + abytes(numel4(os)) + bwd_block + child +
                 2 * abytes(n * ted);
    p.scratch = zmax(fwd, bwd);
    return p;
}

/* ---- forward -------------------------------------------------------------------------------- */

static int tensor4(sd_arena *a, sd_tensor *t, const int64_t *s)
{
    int rc = sd_arena_tensor(a, t, SD_F32, 4, s);
    return rc ? sd_err_prefix(rc, "unet activations") : SD_OK;
}

static int tensor_n(sd_arena *a, sd_tensor *t, int nd, const int64_t *s)
{
    int rc = sd_arena_tensor(a, t, SD_F32, nd, s);
    return rc ? sd_err_prefix(rc, "unet activations") : SD_OK;
}

int sd_unet_forward(sd_ctx *ctx, sd_unet *u, sd_arena *save, sd_tensor *y, const sd_tensor *x,
                    const sd_tensor *t, const sd_tensor *context, const sd_tensor *vec)
{
    const sd_unet_config *c = &u->cfg;
    int64_t mch = c->model_channels, ted = 4 * mch, mult = (int64_t)1 << (c->n_levels - 1);
    if (!x || !t || !context || x->ndim != 4 || x->shape[1] != c->in_channels)
        return sd_err(SD_EINVAL, "unet: x must be [N, %d, H, W]", c->in_channels);
    int64_t N = x->shape[0], H = x->shape[2], W = x->shape[3];
    if (H % mult || W % mult || H < mult || W < mult)
        return sd_err(SD_EINVAL, "unet: latent size %lldx%lld is not a multiple of %lld", (long long)H,
                      (long long)W, (long long)mult);
    if (t->ndim != 1 || t->shape[0] != N || t->dtype != SD_F32)
        return sd_err(SD_EINVAL, "unet: timesteps must be f32 [%lld]", (long long)N);
    if (context->ndim != 3 || context->shape[0] != N || context->shape[2] != c->context_dim)
        return sd_err(SD_EINVAL, "unet: context must be [%lld, S, %d]", (long long)N, c->context_dim);
    const sd_unet_control *ctl = u->ctl;
    if (u->encoder_only ? y != NULL : !y)
        return sd_err(SD_EINVAL, u->encoder_only ? "unet: the encoder half has no output y (see sd_unet_block_output)"
                                                 : "unet: no output tensor");
    if (!u->encoder_only && (y->ndim != 4 || y->shape[0] != N || y->shape[1] != c->out_channels ||
                             y->shape[2] != H || y->shape[3] != W))
        return sd_err(SD_EINVAL, "unet: output must be [%lld, %d, %lld, %lld]", (long long)N, c->out_channels,
                      (long long)H, (long long)W);
    if (ctl && ctl->add0 && !u->encoder_only) return sd_err(SD_EINVAL, "unet: add0 is for the encoder half only");
    if (ctl && (ctl->down || ctl->mid) && u->encoder_only)
        return sd_err(SD_EINVAL, "unet: the encoder half takes no residuals");
    if (c->adm_in_channels > 0 && !vec)
        return sd_err(SD_EINVAL, "unet: this UNet has label_emb: the vector input [%lld, %d] is required",
                      (long long)N, c->adm_in_channels);
    if (c->adm_in_channels <= 0 && vec)
        return sd_err(SD_EINVAL, "unet: this UNet has no label_emb: no vector input is taken");
    if (vec && (vec->ndim != 2 || vec->shape[0] != N || vec->shape[1] != c->adm_in_channels || vec->dtype != SD_F32))
        return sd_err(SD_EINVAL, "unet: the vector input must be f32 [%lld, %d]", (long long)N, c->adm_in_channels);
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_arena *A = save ? save : &ctx->scratch;
    u->trained = 0;
    sd_tensor temb, e1, e1a, emb, o, l1 = { 0 }, l1a = { 0 }, l2 = { 0 };
    int rc;
    TRY(tensor_n(A, &temb, 2, (int64_t[]){ N, mch }));
    TRY(tensor_n(A, &e1, 2, (int64_t[]){ N, ted }));
    TRY(tensor_n(A, &e1a, 2, (int64_t[]){ N, ted }));
    TRY(tensor_n(A, &emb, 2, (int64_t[]){ N, ted }));
    TRY(sd_op_timestep_embedding(ctx, &temb, t, 1, 0.0f, 10000.0f));
    TRY(sd_linear_forward(ctx, &u->time1, save, &e1, &temb));
    TRY(sd_op_act(ctx, SD_ACT_SILU, &e1a, &e1));
    TRY(sd_linear_forward(ctx, &u->time2, save, &emb, &e1a));
    if (vec) {
        TRY(tensor_n(A, &l1, 2, (int64_t[]){ N, ted }));
        TRY(tensor_n(A, &l1a, 2, (int64_t[]){ N, ted }));
        TRY(tensor_n(A, &l2, 2, (int64_t[]){ N, ted }));
        TRY(sd_linear_forward(ctx, &u->label1, save, &l1, vec));
        TRY(sd_op_act(ctx, SD_ACT_SILU, &l1a, &l1));
        TRY(sd_linear_forward(ctx, &u->label2, save, &l2, &l1a));
        TRY(sd_op_add(ctx, &emb, &emb, &l2));
    }
    const sd_tensor *h = x;
    for (int i = 0; i < u->nblocks; i++) {
        sd_unet_block *b = &u->blocks[i];
        if (b->skip >= 0) {
            const sd_tensor *sk = ctl && ctl->down ? &u->skips[b->skip] : &u->blocks[b->skip].t[u->blocks[b->skip].nsub];
            int64_t cs[4] = { N, h->shape[1] + sk->shape[1], h->shape[2], h->shape[3] };
            TRY(tensor4(A, &b->t[0], cs));
            const sd_tensor *parts[2] = { h, sk };
            TRY(sd_op_concat(ctx, &b->t[0], parts, 2, 1));
        } else {
            b->t[0] = *h;
        }
        for (int k = 0; k < b->nsub; k++) {
            int64_t ys[4];
            sub_out_shape(b, k, b->t[k].shape, ys);
            TRY(tensor4(A, &b->t[k + 1], ys));
            rc = sub_forward(ctx, b, k, save, &b->t[k + 1], &b->t[k], &emb, context);
            if (rc) {
                sd_err_prefix(rc, "unet %s", b->name);
                goto out;
            }
        }
        h = &b->t[b->nsub];
        if (i == 0 && ctl && ctl->add0) {
            if (!sd_tensor_same_shape(ctl->add0, h)) {
                rc = sd_err(SD_EINVAL, "unet: add0 must have the shape of input_blocks.0's output");
                goto out;
            }
            TRY(sd_op_add(ctx, &b->t[b->nsub], &b->t[b->nsub], ctl->add0));
        }
        if (i == u->n_in && ctl && ctl->down) {
            for (int j = 0; j < u->n_in; j++) {
                const sd_tensor *o2 = &u->blocks[j].t[u->blocks[j].nsub];
                if (!sd_tensor_same_shape(&ctl->down[j], o2)) {
                    rc = sd_err(SD_EINVAL, "unet: residual %d must have the shape of input block %d's output", j, j);
                    goto out;
                }
                TRY(tensor4(A, &u->skips[j], o2->shape));
                TRY(sd_op_add(ctx, &u->skips[j], o2, &ctl->down[j]));
            }
        }
        if (i == u->n_in && ctl && ctl->mid) {
            if (!sd_tensor_same_shape(ctl->mid, h)) {
                rc = sd_err(SD_EINVAL, "unet: the middle residual must have the shape of the middle block's output");
                goto out;
            }
            TRY(tensor4(A, &u->midsum, h->shape));
            TRY(sd_op_add(ctx, &u->midsum, h, ctl->mid));
            h = &u->midsum;
        }
    }
    if (u->encoder_only) goto done;
    TRY(tensor4(A, &o, (int64_t[]){ N, mch, H, W }));
    TRY(sd_groupnorm_forward(ctx, &u->out_norm, save, &o, h));
    TRY(sd_conv2d_forward(ctx, &u->out_conv, save, y, &o));
done:
    if (save) {
        u->x = *x;
        u->context = *context;
        if (vec) u->vec = *vec;
        else memset(&u->vec, 0, sizeof u->vec);
        u->l1 = l1;
        u->l1a = l1a;
        u->temb = temb;
        u->e1 = e1;
        u->e1a = e1a;
        u->emb = emb;
        u->o = o;
        u->trained = 1;
    }
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

/* ---- backward ------------------------------------------------------------------------------- */

static sd_tensor view4(const sd_tensor *buf, const int64_t *s)
{
    sd_tensor v = *buf;
    v.ndim = 4;
    memcpy(v.shape, s, 4 * sizeof *s);
    return v;
}

static int zeros(sd_ctx *ctx, sd_tensor *t)
{
    return sd_op_fill(ctx, t, 0.0f);
}

static int block_backward(sd_ctx *ctx, sd_unet_block *b, sd_tensor *dx, const sd_tensor *dy, sd_tensor *demb,
                          sd_tensor *dcontext)
{
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor g = *dy, tmp;
    int rc = SD_OK;
    for (int k = b->nsub - 1; k >= 0; k--) {
        sd_tensor *target = dx;
        if (k > 0) {
            TRY(tensor4(&ctx->scratch, &tmp, b->t[k].shape));
            TRY(zeros(ctx, &tmp));
            target = &tmp;
        }
        rc = sub_backward(ctx, b, k, target, &g, demb, dcontext);
        if (rc) {
            sd_err_prefix(rc, "unet %s", b->name);
            goto out;
        }
        if (k > 0) g = tmp;
    }
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

static int has_grad(const sd_linear *l)
{
    return sd_param_has_grad(l->w) || sd_param_has_grad(l->b);
}

int sd_unet_backward(sd_ctx *ctx, sd_unet *u, sd_tensor *dx, sd_tensor *dcontext, sd_tensor *dvec,
                     const sd_tensor *dy)
{
    if (!u->trained) return sd_err(SD_ESTATE, "unet: backward without a training forward");
    u->trained = 0;
    if (dx && !sd_tensor_same_shape(dx, &u->x)) return sd_err(SD_EINVAL, "unet: dx must have the shape of x");
    if (dcontext && !sd_tensor_same_shape(dcontext, &u->context))
        return sd_err(SD_EINVAL, "unet: dcontext must have the shape of the context");
    if (dvec && (!u->vec.data || !sd_tensor_same_shape(dvec, &u->vec)))
        return sd_err(SD_EINVAL, u->vec.data ? "unet: dvec must have the shape of the vector input"
                                              : "unet: dvec without a vector input");
    const sd_unet_control *ctl = u->ctl;
    if (u->encoder_only) {
        if (dy || !ctl || !ctl->dout)
            return sd_err(SD_EINVAL, "unet: the encoder half's backward takes the gradients of its block outputs");
        for (int i = 0; i <= u->n_in; i++)
            if (!sd_tensor_same_shape(&ctl->dout[i], sd_unet_block_output(u, i)))
                return sd_err(SD_EINVAL, "unet: the gradient of block %d's output has the wrong shape", i);
    } else if (ctl && ctl->stop_at_residuals && (dx || dcontext || dvec)) {
        return sd_err(SD_EINVAL, "unet: stop_at_residuals gives no dx, dcontext or dvec");
    } else if (!dy || dy->ndim != 4 || dy->shape[0] != u->x.shape[0] || dy->shape[1] != u->cfg.out_channels ||
        dy->shape[2] != u->x.shape[2] || dy->shape[3] != u->x.shape[3])
        return sd_err(SD_EINVAL, "unet: dy must have the shape of the output");
    size_t mark = sd_arena_mark(&ctx->scratch);
    int time_grad = has_grad(&u->time1) || has_grad(&u->time2);
    int label = u->vec.data && (dvec || has_grad(&u->label1) || has_grad(&u->label2));
    int need_emb = time_grad || label;
    sd_tensor demb, dout, G[2], dcat;
    int rc;
    sd_tensor *pdemb = NULL;
    if (need_emb) {
        TRY(tensor_n(&ctx->scratch, &demb, 2, u->emb.shape));
        TRY(zeros(ctx, &demb));
        pdemb = &demb;
    }
    int64_t gmax = 0, cmax = 0;
    for (int i = 0; i < u->nblocks; i++) {
        sd_unet_block *b = &u->blocks[i];
        int64_t no = sd_tensor_numel(&b->t[b->nsub]);
        if (no > gmax) gmax = no;
        if (b->skip >= 0 && sd_tensor_numel(&b->t[0]) > cmax) cmax = sd_tensor_numel(&b->t[0]);
        if (i < u->n_in) {
            TRY(tensor4(&ctx->scratch, &u->dhs[i], b->t[b->nsub].shape));
            TRY(zeros(ctx, &u->dhs[i]));
        }
    }
    for (int j = 0; j < 2; j++) TRY(tensor_n(&ctx->scratch, &G[j], 1, (int64_t[]){ gmax }));
    TRY(tensor_n(&ctx->scratch, &dcat, 1, (int64_t[]){ cmax ? cmax : 1 }));
    /* out.2, out.0 */
    int cur = 0;
    sd_unet_block *last = &u->blocks[u->nblocks - 1];
    sd_tensor dh = view4(&G[cur], last->t[last->nsub].shape);
    if (u->encoder_only) {
        for (int i = 0; i < u->n_in; i++) TRY(sd_op_add(ctx, &u->dhs[i], &u->dhs[i], &ctl->dout[i]));
        TRY(sd_op_convert(ctx, &dh, &ctl->dout[u->n_in]));
    } else {
        size_t m2 = sd_arena_mark(&ctx->scratch);
        TRY(tensor4(&ctx->scratch, &dout, u->o.shape));
        TRY(zeros(ctx, &dout));
        TRY(sd_conv2d_backward(ctx, &u->out_conv, &dout, dy));
        TRY(zeros(ctx, &dh));
        TRY(sd_groupnorm_backward(ctx, &u->out_norm, &dh, &dout));
        sd_arena_reset(&ctx->scratch, m2);
    }
    /* output blocks, last to first */
    for (int i = u->nblocks - 1; i > u->n_in; i--) {
        sd_unet_block *b = &u->blocks[i], *prev = &u->blocks[i - 1];
        sd_tensor dc = view4(&dcat, b->t[0].shape);
        TRY(zeros(ctx, &dc));
        TRY(block_backward(ctx, b, &dc, &dh, pdemb, dcontext));
        sd_tensor dprev = view4(&G[1 - cur], prev->t[prev->nsub].shape);
        TRY(zeros(ctx, &dprev));
        sd_tensor *parts[2] = { &dprev, &u->dhs[b->skip] };
        TRY(sd_op_concat_bwd(ctx, parts, 2, &dc, 1));
        cur = 1 - cur;
        dh = dprev;
    }
    if (ctl && !u->encoder_only) {
        if (ctl->ddown)
            for (int i = 0; i < u->n_in; i++) {
                if (!sd_tensor_same_shape(&ctl->ddown[i], &u->dhs[i])) {
                    rc = sd_err(SD_EINVAL, "unet: ddown[%d] must have the shape of input block %d's output", i, i);
                    goto out;
                }
                TRY(sd_op_add(ctx, &ctl->ddown[i], &ctl->ddown[i], &u->dhs[i]));
            }
        if (ctl->dmid) {
            if (!sd_tensor_same_shape(ctl->dmid, &dh)) {
                rc = sd_err(SD_EINVAL, "unet: dmid must have the shape of the middle block's output");
                goto out;
            }
            TRY(sd_op_add(ctx, ctl->dmid, ctl->dmid, &dh));
        }
        if (ctl->stop_at_residuals) goto out;
    }
    /* middle block: its input is the last input block's output */
    TRY(block_backward(ctx, &u->blocks[u->n_in], &u->dhs[u->n_in - 1], &dh, pdemb, dcontext));
    for (int i = u->n_in - 1; i >= 1; i--)
        TRY(block_backward(ctx, &u->blocks[i], &u->dhs[i - 1], &u->dhs[i], pdemb, dcontext));
    if (ctl && ctl->dadd0) TRY(sd_op_add(ctx, ctl->dadd0, ctl->dadd0, &u->dhs[0]));
    TRY(block_backward(ctx, &u->blocks[0], dx, &u->dhs[0], pdemb, dcontext));
    if (time_grad) {
        size_t m2 = sd_arena_mark(&ctx->scratch);
        sd_tensor de1a, de1;
        TRY(tensor_n(&ctx->scratch, &de1a, 2, u->emb.shape));
        TRY(zeros(ctx, &de1a));
        TRY(sd_linear_backward(ctx, &u->time2, &de1a, &demb));
        TRY(tensor_n(&ctx->scratch, &de1, 2, u->emb.shape));
        TRY(zeros(ctx, &de1));
        TRY(sd_op_act_bwd(ctx, SD_ACT_SILU, &de1, &de1a, &u->e1));
        TRY(sd_linear_backward(ctx, &u->time1, NULL, &de1));
        sd_arena_reset(&ctx->scratch, m2);
    }
    if (label) {
        /* emb = time_embed(...) + label_emb(vec): the same d emb flows into both */
        sd_tensor dl1a, dl1;
        TRY(tensor_n(&ctx->scratch, &dl1a, 2, u->emb.shape));
        TRY(zeros(ctx, &dl1a));
        TRY(sd_linear_backward(ctx, &u->label2, &dl1a, &demb));
        TRY(tensor_n(&ctx->scratch, &dl1, 2, u->emb.shape));
        TRY(zeros(ctx, &dl1));
        TRY(sd_op_act_bwd(ctx, SD_ACT_SILU, &dl1, &dl1a, &u->l1));
        TRY(sd_linear_backward(ctx, &u->label1, dvec, &dl1));
    }
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

/* ---- LoRA hook points ------------------------------------------------------------------------ */

size_t sd_unet_layer_count(const sd_unet *u) { return u->nlayers; }

const sd_unet_layer *sd_unet_layer_at(const sd_unet *u, size_t i)
{
    return i < u->nlayers ? &u->layers[i] : NULL;
}

const sd_unet_layer *sd_unet_layer_find(const sd_unet *u, const char *key)
{
    for (size_t i = 0; i < u->nlayers; i++)
        if (!strcmp(u->layers[i].key, key)) return &u->layers[i];
    return NULL;
}

/* ---- names ---------------------------------------------------------------------------------- */

static int convert(char *const *from, char *const *to, size_t nmap, const char *name, char *out, size_t n)
{
    for (size_t i = 0; i < nmap; i++) {
        size_t fl = strlen(from[i]);
        if (strncmp(name, from[i], fl)) continue;
        size_t need = strlen(to[i]) + strlen(name + fl) + 1;
        if (need > n) return sd_err(SD_ERANGE, "unet: name '%s' too long", name);
        snprintf(out, n, "%s%s", to[i], name + fl);
        return SD_OK;
    }
    return sd_err(SD_ENOTFOUND, "unet: no tensor '%s' in this UNet", name);
}

int sd_unet_name_to_diffusers(const sd_unet *u, const char *ldm, char *out, size_t n)
{
    return convert(u->map_ldm, u->map_diff, u->nmap, ldm, out, n);
}

int sd_unet_name_from_diffusers(const sd_unet *u, const char *diffusers, char *out, size_t n)
{
    return convert(u->map_diff, u->map_ldm, u->nmap, diffusers, out, n);
}

int sd_unet_load(sd_unet *u, const sd_safetensors *st, sd_unet_naming naming, const char *file_prefix,
                 unsigned flags, sd_load_report *rep)
{
    int rc;
    flags |= SD_LOAD_SQUEEZE_1X1 | SD_LOAD_MAPPED_ONLY;
    if (naming == SD_UNET_NAMES_LDM) {
        sd_key_map m = { u->prefix, file_prefix ? file_prefix : "" };
        if (!*u->prefix && !*m.file) {
            /* bare names on both sides: map every UNet key to itself */
            m.ours = "";
        }
        rc = sd_params_load_safetensors(u->params, st, &m, 1, flags, rep);
        return rc;
    }
    sd_key_map *m = calloc(u->nmap + 1, sizeof *m);
    char **ours = calloc(u->nmap, sizeof *ours);
    if (!m || !ours) {
        free(m);
        free(ours);
        return sd_err(SD_ENOMEM, "unet: out of memory");
    }
    rc = SD_OK;
    for (size_t i = 0; i < u->nmap && !rc; i++) {
        size_t len = strlen(u->prefix) + strlen(u->map_ldm[i]) + 1;
        ours[i] = malloc(len);
        if (!ours[i]) rc = sd_err(SD_ENOMEM, "unet: out of memory");
        else snprintf(ours[i], len, "%s%s", u->prefix, u->map_ldm[i]);
        m[i].ours = ours[i];
        m[i].file = u->map_diff[i];
    }
    /* catch-all: every tensor of a Diffusers UNet file must belong to the UNet */
    m[u->nmap].ours = "\x01";
    m[u->nmap].file = "";
    if (!rc) rc = sd_params_load_safetensors(u->params, st, m, u->nmap + 1, flags, rep);
    for (size_t i = 0; i < u->nmap; i++) free(ours[i]);
    free(ours);
    free(m);
    return rc;
}

/* ---- cost model (benchmarks) ------------------------------------------------------------ */

static double flops_res(const sd_resblock *r, double hw)
{
    double f = 2.0 * (double)(r->cin * r->cout) * 9 * hw + 2.0 * (double)(r->cout * r->cout) * 9 * hw;
    if (r->has_skip) f += 2.0 * (double)(r->cin * r->cout) * hw;
    return f + 2.0 * (double)(r->emb_dim * r->cout);
}

/* weights_only: leave out the attention score products (Q·Kᵀ, P·V), which have no weights */
static double flops_st(const sd_spatial_transformer *st, double t, double s, double ctx_dim, int weights_only)
{
    double d = (double)st->inner, f = 2 * 2.0 * (double)st->c * d * t, sc = weights_only ? 0.0 : 1.0;
    for (int i = 0; i < st->depth; i++) {
        f += 4 * 2.0 * d * d * t + sc * 4.0 * t * t * d;                       /* attn1 */
        f += 2 * 2.0 * d * d * t + 2 * 2.0 * ctx_dim * d * s + sc * 4.0 * t * s * d;   /* attn2 */
        f += 2.0 * t * d * 8 * d + 2.0 * t * 4 * d * d;                    /* GEGLU feed-forward */
    }
    return f;
}

static double unet_flops(const sd_unet *u, int64_t h, int64_t w, int64_t s, int weights_only)
{
    const sd_unet_config *c = &u->cfg;
    double f = 2.0 * (double)(c->model_channels * 4 * c->model_channels) * (1 + 4);
    if (c->adm_in_channels > 0)   /* label_emb: adm → 4·mc, 4·mc → 4·mc */
        f += 2.0 * (double)(4 * c->model_channels) * (double)(c->adm_in_channels + 4 * c->model_channels);
    double hh = (double)h, ww = (double)w;
    for (int i = 0; i < u->nblocks; i++) {
        const sd_unet_block *b = &u->blocks[i];
        double hw = hh * ww;
        if (b->conv_in) f += 2.0 * (double)(b->conv_in->cin * b->conv_in->cout) * 9 * hw;
        if (b->res) f += flops_res(b->res, hw);
        if (b->res2) f += flops_res(b->res2, hw);
        if (b->st) f += flops_st(b->st, hw, (double)s, (double)c->context_dim, weights_only);
        if (b->down) {
            hh /= 2;
            ww /= 2;
            f += 2.0 * (double)(b->down->op.cin * b->down->op.cout) * 9 * hh * ww;
        }
        if (b->up) {
            hh *= 2;
            ww *= 2;
            f += 2.0 * (double)(b->up->conv.cin * b->up->conv.cout) * 9 * hh * ww;
        }
    }
    return f + 2.0 * (double)(c->model_channels * c->out_channels) * 9 * (double)(h * w);
}

double sd_unet_forward_flops(const sd_unet *u, int64_t h, int64_t w, int64_t s)
{
    return unet_flops(u, h, w, s, 0);
}

double sd_unet_weight_flops(const sd_unet *u, int64_t h, int64_t w, int64_t s)
{
    return unet_flops(u, h, w, s, 1);
}
