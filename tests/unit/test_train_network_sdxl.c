/* The LoRA network attached to the real SDXL base shapes (train/lora_network.h with sdxl = 1): the
 * module counts of reference-behaviour §7.1 (TE1 72 + TE2 192, UNet 722 = 11 transformer models × 2
 * + 70 transformer blocks × 10), kohya's SDXL names (lora_te1_*, lora_te2_*, lora_unet_ + the ldm
 * name) and shapes, the 23 SDXL blocks of the block weights, C3Lier's conv modules; Diffusers-named UNet
 * modules read as their SGM names. Only the LoRA
 * registry is allocated (the model's parameters are registered, never allocated). */
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "models/clip.h"
#include "models/model_config.h"
#include "models/unet.h"
#include "test.h"
#include "train/lora_network.h"

static sd_ctx g_ctx;

static size_t count(const sd_lora_network *n, const char *prefix)
{
    size_t k = 0;
    for (size_t i = 0; i < n->n; i++) k += !strncmp(n->names[i], prefix, strlen(prefix));
    return k;
}

static const sd_lora *find(const sd_lora_network *n, const char *name)
{
    for (size_t i = 0; i < n->n; i++)
        if (!strcmp(n->names[i], name)) return &n->mods[i];
    return NULL;
}

static void test_sdxl_counts(void)
{
    sd_model_config cfg;
    T_EQ_INT(sd_model_config_preset(SD_FAMILY_SDXL, &cfg), 0);
    sd_params r;
    sd_params_init(&r);
    sd_unet u;
    sd_clip te1, te2;
    T_EQ_INT(sd_unet_init(&u, &r, "model.diffusion_model", &cfg.unet), 0);
    T_EQ_INT(sd_clip_init(&te1, &r, "conditioner.embedders.0.transformer", &cfg.clip, SD_FAMILY_SDXL), 0);
    T_EQ_INT(sd_clip_init(&te2, &r, "conditioner.embedders.1.model", &cfg.clip2, SD_FAMILY_SDXL), 0);
    sd_lora_net_args a;
    T_EQ_INT(sd_lora_net_args_parse(&a, 1, 1, 1.0, NULL, 0), 0);
    sd_lora_network n;
    sd_lora_network_opts o = { .args = &a, .with_unet = 1, .with_te = 1, .seed = 1, .sdxl = 1, .te2 = &te2 };
    T_EQ_INT(sd_lora_network_build(&n, &g_ctx, &u, &te1, &o), 0);
    T_EQ_INT(count(&n, "lora_te1_"), 72);
    T_EQ_INT(count(&n, "lora_te2_"), 192);
    T_EQ_INT(n.n_te, 264);
    T_EQ_INT(n.n_unet, 722);
    T_EQ_INT(count(&n, "lora_unet_down_blocks"), 0);
    const sd_lora *l = find(&n, "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q");
    T_CHECK(l && l->down->value.ndim == 2 && l->down->value.shape[1] == 640);
    l = find(&n, "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k");
    T_CHECK(l && l->down->value.shape[1] == 2048);
    l = find(&n, "lora_unet_middle_block_1_proj_in");
    T_CHECK(l && l->up->value.ndim == 2 && l->up->value.shape[0] == 1280);
    T_CHECK(find(&n, "lora_unet_output_blocks_2_1_transformer_blocks_9_ff_net_2") != NULL);
    T_CHECK(find(&n, "lora_te2_text_model_encoder_layers_31_self_attn_out_proj") != NULL);
    l = find(&n, "lora_te2_text_model_encoder_layers_0_mlp_fc1");
    T_CHECK(l && l->down->value.shape[1] == 1280 && l->up->value.shape[0] == 5120);
    T_CHECK(find(&n, "lora_te1_text_model_encoder_layers_11_mlp_fc2") != NULL);
    sd_lora_network_free(&n);
    /* C3Lier: ResBlock / sampler convs with their linear and 1x1 children */
    const char *cv[] = { "conv_dim=1" };
    T_EQ_INT(sd_lora_net_args_parse(&a, 1, 1, 1.0, cv, 1), 0);
    o.with_te = 0;
    T_EQ_INT(sd_lora_network_build(&n, &g_ctx, &u, &te1, &o), 0);
    T_CHECK(n.n_unet > 722);
    printf("# SDXL UNet with conv_dim: %zu modules\n", n.n_unet);
    l = find(&n, "lora_unet_output_blocks_2_2_conv");
    T_CHECK(l && l->down->value.ndim == 4 && l->down->value.shape[2] == 3);
    T_CHECK(find(&n, "lora_unet_input_blocks_3_0_op") != NULL);
    T_CHECK(find(&n, "lora_unet_input_blocks_1_0_in_layers_2") != NULL);
    T_CHECK(find(&n, "lora_unet_input_blocks_1_0_emb_layers_1") != NULL);
    sd_lora_network_free(&n);
    /* the 23 blocks: down_lr_weight zero for input_blocks 4..8 (blocks 5..9), mid 0 */
    const char *bw[] = { "down_lr_weight=1,1,1,1,0,0,0,0,0", "mid_lr_weight=0,0,0" };
    T_EQ_INT(sd_lora_net_args_parse(&a, 1, 1, 1.0, bw, 2), 0);
    T_EQ_INT(sd_lora_network_build(&n, &g_ctx, &u, &te1, &o), 0);
    T_EQ_INT(count(&n, "lora_unet_input_blocks_4_") + count(&n, "lora_unet_input_blocks_7_") +
                 count(&n, "lora_unet_middle_block_"), 0);
    T_CHECK(count(&n, "lora_unet_output_blocks_") > 0);
    sd_lora_network_free(&n);
    sd_clip_free(&te2);
    sd_clip_free(&te1);
    sd_unet_free(&u);
    sd_params_free(&r);
}

/* Diffusers-named SDXL UNet modules ↔ kohya's SGM names on the real SDXL layout (sd_lora_sdxl_unet_name), and an
 * in-memory file's Diffusers-named modules renamed in the handle (sd_lora_file_sdxl_to_sgm); both namings of one
 * layer in one file are refused naming both */
static void test_sdxl_diffusers_names(void)
{
    sd_model_config cfg;
    T_EQ_INT(sd_model_config_preset(SD_FAMILY_SDXL, &cfg), 0);
    sd_params r;
    sd_params_init(&r);
    sd_unet u;
    T_EQ_INT(sd_unet_init(&u, &r, "model.diffusion_model", &cfg.unet), 0);
    static const char *pairs[][2] = {
        { "input_blocks_4_1_transformer_blocks_0_attn1_to_q", "down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q" },
        { "input_blocks_8_1_proj_out", "down_blocks_2_attentions_1_proj_out" },
        { "middle_block_1_transformer_blocks_9_ff_net_0_proj", "mid_block_attentions_0_transformer_blocks_9_ff_net_0_proj" },
        { "middle_block_0_in_layers_2", "mid_block_resnets_0_conv1" },
        { "middle_block_2_out_layers_3", "mid_block_resnets_1_conv2" },
        { "output_blocks_0_1_transformer_blocks_9_ff_net_2", "up_blocks_0_attentions_0_transformer_blocks_9_ff_net_2" },
        { "output_blocks_3_1_proj_in", "up_blocks_1_attentions_0_proj_in" },
        { "output_blocks_2_2_conv", "up_blocks_0_upsamplers_0_conv" },
        { "output_blocks_5_2_conv", "up_blocks_1_upsamplers_0_conv" },
        { "input_blocks_3_0_op", "down_blocks_0_downsamplers_0_conv" },
        { "input_blocks_4_0_skip_connection", "down_blocks_1_resnets_0_conv_shortcut" },
        { "input_blocks_1_0_emb_layers_1", "down_blocks_0_resnets_0_time_emb_proj" },
    };
    char a[256], b[256], out[256];
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        snprintf(a, sizeof a, "lora_unet_%s", pairs[i][0]);
        snprintf(b, sizeof b, "lora_unet_%s", pairs[i][1]);
        T_EQ_INT(sd_lora_sdxl_unet_name(&u, b, 1, out, sizeof out), 1);
        T_EQ_STR(out, a);
        T_EQ_INT(sd_lora_sdxl_unet_name(&u, a, 0, out, sizeof out), 1);
        T_EQ_STR(out, b);
    }
    T_EQ_INT(sd_lora_sdxl_unet_name(&u, "lora_unet_input_blocks_4_1_proj_in", 1, out, sizeof out), 0);
    T_EQ_INT(sd_lora_sdxl_unet_name(&u, "lora_te1_text_model_encoder_layers_0_mlp_fc1", 1, out, sizeof out), 0);
    T_CHECK(sd_lora_sdxl_unet_name(&u, "lora_unet_down_blocks_1_attentions_0_proj_in", 1, out, 8) < 0);

    /* a file: one Diffusers-named UNet module, one SGM-named, one text-encoder module */
    static const float z[4] = { 0 };
    static const char *mods[3] = { "lora_unet_down_blocks_1_attentions_0_proj_in", "lora_unet_input_blocks_5_1_proj_out",
                                   "lora_te1_text_model_encoder_layers_0_mlp_fc1" };
    for (int mixed = 0; mixed < 2; mixed++) {
        sd_safetensors_writer *w;
        T_EQ_INT(sd_safetensors_writer_new(&w), 0);
        char key[3][3][128];
        for (int m = 0; m < 3; m++) {
            const char *sfx[3] = { "lora_down.weight", "lora_up.weight", "alpha" };
            for (int k = 0; k < 3; k++) {
                snprintf(key[m][k], sizeof key[m][k], "%s.%s", mods[m], sfx[k]);
                T_EQ_INT(sd_safetensors_writer_add(w, key[m][k], SD_ST_F32, k < 2 ? 1 : 0, (int64_t[]){ 1 }, z), 0);
            }
        }
        char extra[128];
        if (mixed) {
            snprintf(extra, sizeof extra, "lora_unet_input_blocks_4_1_proj_in.alpha");
            T_EQ_INT(sd_safetensors_writer_add(w, extra, SD_ST_F32, 0, NULL, z), 0);
        }
        void *buf;
        size_t n;
        T_EQ_INT(sd_safetensors_writer_write_mem(w, &buf, &n), 0);
        sd_safetensors_writer_free(w);
        sd_safetensors *st;
        T_EQ_INT(sd_safetensors_open_mem(buf, n, "f.safetensors", &st), 0);
        size_t nm = 99;
        int rc = sd_lora_file_sdxl_to_sgm(st, &u, &nm);
        if (!mixed) {
            T_EQ_INT(rc, 0);
            T_EQ_INT(nm, 1);
            T_CHECK(sd_safetensors_find(st, "lora_unet_input_blocks_4_1_proj_in.lora_down.weight") &&
                    sd_safetensors_find(st, "lora_unet_input_blocks_4_1_proj_in.lora_up.weight") &&
                    sd_safetensors_find(st, "lora_unet_input_blocks_4_1_proj_in.alpha"));
            T_CHECK(sd_safetensors_find(st, "lora_unet_input_blocks_5_1_proj_out.alpha") &&
                    sd_safetensors_find(st, "lora_te1_text_model_encoder_layers_0_mlp_fc1.alpha"));
            T_CHECK(!sd_safetensors_find(st, "lora_unet_down_blocks_1_attentions_0_proj_in.alpha"));
        } else {
            T_EQ_INT(rc, SD_EFORMAT);
            T_CHECK(strstr(sd_errmsg(), "f.safetensors: modules 'lora_unet_down_blocks_1_attentions_0_proj_in' "
                                        "(Diffusers name) and 'lora_unet_input_blocks_4_1_proj_in' (SGM name)"));
            T_CHECK(sd_safetensors_find(st, "lora_unet_down_blocks_1_attentions_0_proj_in.alpha") != NULL);
        }
        sd_safetensors_close(st);
        free(buf);
    }
    sd_unet_free(&u);
    sd_params_free(&r);
}

int main(void)
{
    if (sd_ctx_init(&g_ctx, SD_DEV_CPU, 1, 0)) return 1;
    T_RUN(test_sdxl_counts);
    T_RUN(test_sdxl_diffusers_names);
    sd_ctx_free(&g_ctx);
    T_DONE();
}
