/* The LoRA network attached to real SD1.x / SD2.x shapes (train/lora_network.h): the module counts
 * of reference-behaviour §7.1 (SD1: text encoder 72, UNet 192, with conv_dim 278; SD2: 138 / 192),
 * kohya names and shapes, block-dim zeroing and --network_train_*_only. Only the LoRA registry is
 * allocated (the model's parameters are registered, never allocated). */
#include <string.h>

#include "models/clip.h"
#include "models/model_config.h"
#include "models/unet.h"
#include "test.h"
#include "train/lora_network.h"

static sd_ctx g_ctx;

typedef struct shapes {
    sd_params r;
    sd_unet u;
    sd_clip te;
    sd_model_config cfg;
} shapes;

static int shapes_init(shapes *s, sd_family f)
{
    if (sd_model_config_preset(f, &s->cfg)) return -1;
    sd_params_init(&s->r);
    if (sd_unet_init(&s->u, &s->r, "model.diffusion_model", &s->cfg.unet)) return -1;
    if (sd_clip_init(&s->te, &s->r, "cond_stage_model.transformer", &s->cfg.clip, f)) return -1;
    return 0;
}

static void shapes_free(shapes *s)
{
    sd_unet_free(&s->u);
    sd_clip_free(&s->te);
    sd_params_free(&s->r);
}

static size_t count(const sd_lora_network *n, const char *prefix, int conv)
{
    size_t k = 0;
    for (size_t i = 0; i < n->n; i++)
        if (!strncmp(n->names[i], prefix, strlen(prefix)) && (conv < 0 || (n->mods[i].kh > 1) == conv)) k++;
    return k;
}

static const sd_lora *find(const sd_lora_network *n, const char *name)
{
    for (size_t i = 0; i < n->n; i++)
        if (!strcmp(n->names[i], name)) return &n->mods[i];
    return NULL;
}

static void test_sd1_counts(void)
{
    shapes s;
    T_CHECK(shapes_init(&s, SD_FAMILY_SD1) == 0);
    sd_lora_net_args a;
    T_EQ_INT(sd_lora_net_args_parse(&a, 0, 4, 1.0, NULL, 0), 0);
    sd_lora_network n;
    sd_lora_network_opts o = { .args = &a, .with_unet = 1, .with_te = 1, .seed = 1 };
    T_EQ_INT(sd_lora_network_build(&n, &g_ctx, &s.u, &s.te, &o), 0);
    T_EQ_INT(n.n_te, 72);
    T_EQ_INT(n.n_unet, 192);
    T_EQ_INT(count(&n, "lora_te_", -1), 72);
    const sd_lora *l = find(&n, "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k");
    T_CHECK(l != NULL);
    if (l) {
        T_EQ_INT(l->down->value.shape[0], 4);
        T_EQ_INT(l->down->value.shape[1], 768);
    }
    l = find(&n, "lora_unet_down_blocks_0_attentions_0_proj_in");
    T_CHECK(l && l->up->value.ndim == 4 && l->up->value.shape[0] == 320 && l->up->value.shape[2] == 1);
    T_CHECK(find(&n, "lora_te_text_model_encoder_layers_11_mlp_fc2") != NULL);
    T_CHECK(find(&n, "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2") != NULL);
    T_CHECK(find(&n, "lora_unet_down_blocks_0_resnets_0_conv1") == NULL);
    sd_lora_network_free(&n);
    /* C3Lier: conv_dim adds the ResBlock and sampler convs (and their linear/1x1 children) */
    const char *args[] = { "conv_dim=8", "conv_alpha=2" };
    T_EQ_INT(sd_lora_net_args_parse(&a, 0, 4, 1.0, args, 2), 0);
    T_EQ_INT(sd_lora_network_build(&n, &g_ctx, &s.u, &s.te, &o), 0);
    T_EQ_INT(n.n_unet, 278);
    l = find(&n, "lora_unet_down_blocks_0_resnets_0_conv1");
    T_CHECK(l && l->rank == 8 && l->down->value.ndim == 4 && l->down->value.shape[2] == 3);
    T_CHECK(find(&n, "lora_unet_down_blocks_0_downsamplers_0_conv") != NULL);
    T_CHECK(find(&n, "lora_unet_up_blocks_0_upsamplers_0_conv") != NULL);
    l = find(&n, "lora_unet_down_blocks_0_resnets_0_time_emb_proj");
    T_CHECK(l && l->rank == 4);
    sd_lora_network_free(&n);
    /* unet only / text encoder only */
    T_EQ_INT(sd_lora_net_args_parse(&a, 0, 16, 8.0, NULL, 0), 0);
    o.with_te = 0;
    T_EQ_INT(sd_lora_network_build(&n, &g_ctx, &s.u, &s.te, &o), 0);
    T_EQ_INT(n.n_te, 0);
    T_EQ_INT(n.n_unet, 192);
    T_EQ_INT(n.mods[0].rank, 16);
    sd_lora_network_free(&n);
    o.with_te = 1;
    o.with_unet = 0;
    T_EQ_INT(sd_lora_network_build(&n, &g_ctx, &s.u, &s.te, &o), 0);
    T_EQ_INT(n.n_unet, 0);
    T_EQ_INT(n.n_te, 72);
    sd_lora_network_free(&n);
    /* block LR weight 0 for the down blocks: no modules there */
    const char *bw[] = { "down_lr_weight=0,0,0,0,0,0,0,0,0,0,0,0" };
    T_EQ_INT(sd_lora_net_args_parse(&a, 0, 4, 1.0, bw, 1), 0);
    o.with_unet = 1;
    T_EQ_INT(sd_lora_network_build(&n, &g_ctx, &s.u, &s.te, &o), 0);
    T_EQ_INT(count(&n, "lora_unet_down_blocks_", -1), 0);
    T_CHECK(count(&n, "lora_unet_up_blocks_", -1) > 0);
    sd_lora_network_free(&n);
    shapes_free(&s);
}

static void test_sd2_counts(void)
{
    shapes s;
    T_CHECK(shapes_init(&s, SD_FAMILY_SD2) == 0);
    sd_lora_net_args a;
    T_EQ_INT(sd_lora_net_args_parse(&a, 0, 4, 1.0, NULL, 0), 0);
    sd_lora_network n;
    sd_lora_network_opts o = { .args = &a, .with_unet = 1, .with_te = 1, .seed = 1 };
    T_EQ_INT(sd_lora_network_build(&n, &g_ctx, &s.u, &s.te, &o), 0);
    T_EQ_INT(n.n_te, 138);
    T_EQ_INT(n.n_unet, 192);
    /* SD2: linear proj_in → a linear LoRA */
    const sd_lora *l = find(&n, "lora_unet_down_blocks_0_attentions_0_proj_in");
    T_CHECK(l && l->up->value.ndim == 2);
    sd_lora_network_free(&n);
    shapes_free(&s);
}

int main(void)
{
    if (sd_ctx_init(&g_ctx, SD_DEV_CPU, 1, 0)) return 1;
    T_RUN(test_sd1_counts);
    T_RUN(test_sd2_counts);
    sd_ctx_free(&g_ctx);
    T_DONE();
}
