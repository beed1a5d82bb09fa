/* models/model_config (presets, JSON/TOML files, validation messages) and models/detect (family
 * and layout detection from tensor names and shapes; unsupported families named). Detection
 * files are header-only sparse safetensors files: the reader validates the header and never
 * touches the (hole-punched) data, so even full-size SD UNet layouts cost no disk or time. */
#include <unistd.h>

#include "base/error.h"
#include "io/safetensors.h"
#include "models/detect.h"
#include "models/model_config.h"
#include "models/unet.h"
#include "test.h"

/* ---- config --------------------------------------------------------------------------------- */

static void test_presets(void)
{
    sd_model_config c;
    T_EQ_INT(sd_model_config_preset(SD_FAMILY_SD1, &c), SD_OK);
    T_EQ_INT(c.unet.model_channels, 320);
    T_EQ_INT(c.unet.n_levels, 4);
    T_EQ_INT(c.unet.channel_mult[3], 4);
    T_EQ_INT(c.unet.context_dim, 768);
    T_EQ_INT(c.unet.use_linear_in_transformer, 0);
    T_EQ_INT(c.clip.width, 768);
    T_EQ_INT(c.vae.ch, 128);
    T_NEAR(c.vae.scale_factor, 0.18215, 1e-7);
    T_EQ_INT(sd_model_config_validate(&c), SD_OK);
    int h, d;
    sd_unet_config_heads(&c.unet, 640, &h, &d);
    T_EQ_INT(h, 8);
    T_EQ_INT(d, 80);
    T_EQ_INT(sd_unet_config_level_has_attn(&c.unet, 2), 1);
    T_EQ_INT(sd_unet_config_level_has_attn(&c.unet, 3), 0);
    T_EQ_INT(sd_model_config_preset(SD_FAMILY_SD2, &c), SD_OK);
    T_EQ_INT(c.unet.context_dim, 1024);
    T_EQ_INT(c.unet.use_linear_in_transformer, 1);
    T_EQ_INT(c.clip.width, 1024);
    sd_unet_config_heads(&c.unet, 640, &h, &d);
    T_EQ_INT(h, 10);
    T_EQ_INT(d, 64);
    T_EQ_INT(sd_model_config_validate(&c), SD_OK);
    T_EQ_INT(sd_model_config_preset(SD_FAMILY_SDXL, &c), SD_OK);   /* sgm sd_xl_base.yaml */
    T_EQ_INT(c.unet.n_levels, 3);
    T_EQ_INT(c.unet.transformer_depth[0], 0);
    T_EQ_INT(c.unet.transformer_depth[2], 10);
    T_EQ_INT(c.unet.transformer_depth_middle, 10);
    T_EQ_INT(c.unet.context_dim, 2048);
    T_EQ_INT(c.unet.adm_in_channels, 2816);
    T_EQ_INT(sd_unet_config_level_has_attn(&c.unet, 0), 0);
    T_EQ_INT(sd_unet_config_level_has_attn(&c.unet, 2), 1);
    T_EQ_INT(c.clip2.width, 1280);
    T_EQ_INT(c.clip2.projection_dim, 1280);
    T_NEAR(c.vae.scale_factor, 0.13025, 1e-7);
    T_EQ_INT(sd_model_config_validate(&c), SD_OK);
    c.unet.adm_in_channels = 2048;
    T_EQ_INT(sd_model_config_validate(&c), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "adm_in_channels") != NULL);
    T_EQ_INT(sd_model_config_preset(SD_FAMILY_SDXL_REFINER, &c), SD_EUNSUPPORTED);
    T_CHECK(strstr(sd_errmsg(), "SDXL refiner") != NULL);
    T_EQ_STR(sd_family_name(SD_FAMILY_FLUX), "FLUX");
    T_EQ_STR(sd_family_name((sd_family)99), "unknown");
}

static const char *write_text(const char *name, const char *text)
{
    const char *p = t_path(name);
    t_write_file(p, text, strlen(text));
    return p;
}

static void test_load_toml_json(void)
{
    sd_model_config c;
    const char *p = write_text("c.toml",
                               "family = \"sd2\"\nparameterization = \"v\"\n"
                               "[unet]\nmodel_channels = 64\nchannel_mult = [1, 2, 2]\nnum_res_blocks = [1, 2, 1]\n"
                               "attention_resolutions = [2, 4]\nnum_head_channels = 32\ncontext_dim = 96\n"
                               "transformer_depth = 2\n"
                               "[vae]\nch = 32\nch_mult = [1, 2]\nnum_res_blocks = 1\nattn_resolutions = []\n"
                               "z_channels = 4\ndouble_z = true\nscale_factor = 0.5\n"
                               "[clip]\nwidth = 64\nlayers = 2\nheads = 4\nmax_len = 16\nvocab_size = 1000\n");
    T_EQ_INT(sd_model_config_load(p, &c), SD_OK);
    T_EQ_INT(c.family, SD_FAMILY_SD2);
    T_EQ_INT(c.parameterization, SD_PRED_V);
    T_EQ_INT(c.unet.model_channels, 64);
    T_EQ_INT(c.unet.n_levels, 3);
    T_EQ_INT(c.unet.num_res_blocks[1], 2);
    T_EQ_INT(c.unet.num_res_blocks[2], 1);
    T_EQ_INT(c.unet.n_attn, 2);
    T_EQ_INT(c.unet.num_head_channels, 32);
    T_EQ_INT(c.unet.use_linear_in_transformer, 1);   /* from the sd2 preset */
    T_EQ_INT(c.unet.transformer_depth[0], 2);
    T_EQ_INT(c.unet.transformer_depth[2], 2);
    T_EQ_INT(c.unet.transformer_depth_middle, 2);
    T_EQ_INT(c.vae.n_mult, 2);
    T_EQ_INT(c.vae.n_attn, 0);
    T_NEAR(c.vae.scale_factor, 0.5, 0);
    T_EQ_INT(c.clip.max_len, 16);
    /* JSON, nested, SD1 default family, scalar num_res_blocks applies to every level */
    p = write_text("c.json", "{\"unet\": {\"model_channels\": 32, \"channel_mult\": [1, 2], \"num_res_blocks\": 3, "
                             "\"attention_resolutions\": [1], \"num_heads\": 4, \"context_dim\": 16}}");
    T_EQ_INT(sd_model_config_load(p, &c), SD_OK);
    T_EQ_INT(c.family, SD_FAMILY_SD1);
    T_EQ_INT(c.parameterization, SD_PRED_EPS);
    T_EQ_INT(c.unet.num_res_blocks[0], 3);
    T_EQ_INT(c.unet.num_res_blocks[1], 3);
    T_EQ_INT(c.unet.num_heads, 4);
    /* TOML dotted keys work too */
    p = write_text("d.toml", "unet.model_channels = 64\nunet.channel_mult = [1]\nunet.attention_resolutions = []\n");
    T_EQ_INT(sd_model_config_load(p, &c), SD_OK);
    T_EQ_INT(c.unet.model_channels, 64);
    T_EQ_INT(c.unet.n_levels, 1);
}

static void test_load_sdxl(void)
{
    sd_model_config c;
    const char *p = write_text("x.toml",
                               "family = \"sdxl\"\n[unet]\nmodel_channels = 32\nchannel_mult = [1, 2]\n"
                               "attention_resolutions = [2]\nnum_head_channels = 16\ntransformer_depth = [0, 2]\n"
                               "context_dim = 80\nadm_in_channels = 1552\n"
                               "[clip]\nwidth = 32\nlayers = 2\nheads = 2\n"
                               "[clip2]\nwidth = 48\nlayers = 3\nheads = 3\nprojection_dim = 16\n");
    T_EQ_INT(sd_model_config_load(p, &c), SD_OK);
    T_EQ_INT(c.family, SD_FAMILY_SDXL);
    T_EQ_INT(c.unet.transformer_depth[1], 2);
    T_EQ_INT(c.unet.transformer_depth_middle, 2);   /* SGM: the last level's */
    T_EQ_INT(c.clip2.layers, 3);
    p = write_text("y.toml", "[clip2]\nwidth = 48\n");
    T_EQ_INT(sd_model_config_load(p, &c), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "only SDXL") != NULL);
    p = write_text("z.toml", "family = \"sdxl\"\n[unet]\ntransformer_depth = [1, 2]\n");
    T_EQ_INT(sd_model_config_load(p, &c), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "transformer_depth") != NULL);
}

static void expect_error(const char *text, int code, const char *needle)
{
    sd_model_config c;
    const char *p = write_text(text[0] == '{' ? "e.json" : "e.toml", text);
    int rc = sd_model_config_load(p, &c);
    T_CHECKF(rc == code, "'%s': rc %d (%s)", text, rc, sd_errmsg());
    T_CHECKF(strstr(sd_errmsg(), needle) != NULL, "'%s': message '%s' lacks '%s'", text, sd_errmsg(), needle);
    T_CHECKF(strstr(sd_errmsg(), p) != NULL, "'%s': message '%s' lacks the file name", text, sd_errmsg());
    T_CHECK(!strchr(sd_errmsg(), '\n'));
}

static void test_config_errors(void)
{
    expect_error("[unet]\nmodel_channel = 32\n", SD_EFORMAT, "unknown key 'unet.model_channel'");
    expect_error("[unet]\nmodel_channels = \"32\"\n", SD_EFORMAT, "unet.model_channels: expected an integer");
    expect_error("[unet]\nmodel_channels = 32.5\n", SD_EFORMAT, "unet.model_channels");
    expect_error("[unet]\nmodel_channels = 48\n", SD_EFORMAT, "multiple of 32");
    expect_error("[unet]\nchannel_mult = 2\n", SD_EFORMAT, "unet.channel_mult: expected a list");
    expect_error("[unet]\nchannel_mult = []\n", SD_EFORMAT, "empty");
    expect_error("[unet]\nchannel_mult = [1,2,3,4,5,6,7,8,9]\n", SD_EFORMAT, "at most 8");
    expect_error("[unet]\nnum_res_blocks = [1, 2]\n", SD_EFORMAT, "2 entries for 4 levels");
    expect_error("[unet]\nnum_heads = 3\n", SD_EFORMAT, "num_heads 3");
    expect_error("[unet]\nnum_heads = -1\nnum_head_channels = -1\n", SD_EFORMAT, "num_heads or num_head_channels");
    expect_error("[unet]\nattention_resolutions = [3]\n", SD_EFORMAT, "attention_resolutions: 3");
    expect_error("[unet]\nattention_resolutions = [16]\n", SD_EFORMAT, "attention_resolutions: 16");
    expect_error("[unet]\nuse_linear_in_transformer = 1\n", SD_EFORMAT, "expected true or false");
    expect_error("family = \"sdxl3\"\n", SD_EFORMAT, "family: 'sdxl3'");
    expect_error("parameterization = \"x0\"\n", SD_EFORMAT, "parameterization");
    expect_error("[vae]\nscale_factor = -1\n", SD_EFORMAT, "vae.scale_factor");
    expect_error("[clip]\nwidth = 100\nheads = 12\n", SD_EFORMAT, "clip");
    expect_error("[unet]\nfoo = 1\n", SD_EFORMAT, "unet.foo");
    expect_error("unet = 3\n", SD_EFORMAT, "unet: expected a table");
    expect_error("bogus = 1\n", SD_EFORMAT, "unknown key 'bogus'");
    expect_error("[unet\n", SD_EFORMAT, ":1:");
    expect_error("{\"unet\": {\"context_dim\": 0}}", SD_EFORMAT, "unet.context_dim");
    expect_error("{\"unet\": [1]}", SD_EFORMAT, "unet: expected a table");
    expect_error("{\"a\": 1,}", SD_EFORMAT, "");
    sd_model_config c;
    T_EQ_INT(sd_model_config_load(t_path("does-not-exist.toml"), &c), SD_ENOTFOUND);
}

/* ---- detection ------------------------------------------------------------------------------ */

typedef struct tdesc {
    char name[200];
    int nd;
    int64_t s[4];
} tdesc;

/* A safetensors file with these F16 tensors whose data region is a hole (never read). */
static const char *sparse_file(const char *fname, const tdesc *t, size_t n)
{
    size_t cap = 256 + n * 320, len = 0;
    char *h = malloc(cap);
    uint64_t off = 0;
    len += (size_t)snprintf(h + len, cap - len, "{");
    for (size_t i = 0; i < n; i++) {
        uint64_t bytes = 2;
        for (int d = 0; d < t[i].nd; d++) bytes *= (uint64_t)t[i].s[d];
        len += (size_t)snprintf(h + len, cap - len, "%s\"%s\":{\"dtype\":\"F16\",\"shape\":[", i ? "," : "", t[i].name);
        for (int d = 0; d < t[i].nd; d++) len += (size_t)snprintf(h + len, cap - len, "%s%lld", d ? "," : "", (long long)t[i].s[d]);
        len += (size_t)snprintf(h + len, cap - len, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                                (unsigned long long)(off + bytes));
        off += bytes;
    }
    len += (size_t)snprintf(h + len, cap - len, "}");
    while (len % 8) h[len++] = ' ';
    const char *p = t_path(fname);
    FILE *f = fopen(p, "wb");
    uint64_t hl = len;
    fwrite(&hl, 8, 1, f);
    fwrite(h, 1, len, f);
    fflush(f);
    if (ftruncate(fileno(f), (off_t)(8 + len + off))) perror("ftruncate");
    fclose(f);
    free(h);
    return p;
}

#define T1(n, a) { n, 1, { a } }
#define T2(n, a, b) { n, 2, { a, b } }
#define T4(n, a, b, c, d) { n, 4, { a, b, c, d } }

static int detect(const char *fname, const tdesc *t, size_t n, sd_detect_info *info)
{
    sd_safetensors *st;
    int rc = sd_safetensors_open(sparse_file(fname, t, n), &st);
    if (rc) {
        printf("# open: %s\n", sd_errmsg());
        return -1000;
    }
    rc = sd_detect_model(st, info);
    sd_safetensors_close(st);
    return rc;
}

static void test_detect_small(void)
{
    sd_detect_info d;
    const tdesc sd1[] = {
        T2("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", 320, 768),
        T4("model.diffusion_model.input_blocks.0.0.weight", 320, 9, 3, 3),
        T4("first_stage_model.encoder.conv_in.weight", 128, 3, 3, 3),
        T2("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", 49408, 768),
    };
    T_EQ_INT(detect("sd1.safetensors", sd1, 4, &d), SD_OK);
    T_EQ_INT(d.family, SD_FAMILY_SD1);
    T_EQ_INT(d.unet, SD_LAYOUT_LDM);
    T_EQ_INT(d.vae, SD_LAYOUT_LDM);
    T_EQ_INT(d.text_encoder, SD_LAYOUT_LDM);
    T_EQ_STR(d.unet_prefix, "model.diffusion_model.");
    T_EQ_STR(d.vae_prefix, "first_stage_model.");
    T_EQ_STR(d.te_prefix, "cond_stage_model.transformer.");
    T_EQ_INT(d.in_channels, 9);   /* inpainting */
    T_EQ_INT(d.cfg.unet.in_channels, 9);
    T_EQ_INT(d.context_dim, 768);
    T_EQ_INT(d.unet_matches_preset, 0);   /* most tensors are missing */
    T_CHECK(strstr(d.description, "SD1.x single-file checkpoint") != NULL);
    printf("# %s\n", d.description);
    sd_model_config out, user;
    T_EQ_INT(sd_detect_config(&d, NULL, -1, &out), SD_EUNSUPPORTED);
    T_CHECK(strstr(sd_errmsg(), "--model_config") != NULL);
    sd_model_config_preset(SD_FAMILY_SD1, &user);
    user.unet.model_channels = 64;
    T_EQ_INT(sd_detect_config(&d, &user, 1, &out), SD_OK);
    T_EQ_INT(out.unet.model_channels, 64);
    T_EQ_INT(out.parameterization, SD_PRED_V);

    const tdesc sd2te[] = { T2("cond_stage_model.model.token_embedding.weight", 49408, 1024) };
    T_EQ_INT(detect("sd2te.safetensors", sd2te, 1, &d), SD_OK);
    T_EQ_INT(d.family, SD_FAMILY_SD2);
    T_EQ_INT(d.unet, SD_LAYOUT_NONE);
    T_EQ_STR(d.te_prefix, "cond_stage_model.model.");

    const tdesc dif[] = {
        T4("conv_in.weight", 320, 4, 3, 3),
        T2("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight", 320, 1024),
    };
    T_EQ_INT(detect("dif.safetensors", dif, 2, &d), SD_OK);
    T_EQ_INT(d.family, SD_FAMILY_SD2);
    T_EQ_INT(d.unet, SD_LAYOUT_DIFFUSERS);
    T_EQ_INT(d.in_channels, 4);
    T_CHECK(strstr(d.description, "component file: UNet (Diffusers)") != NULL);

    const tdesc vae[] = { T4("encoder.conv_in.weight", 128, 3, 3, 3), T1("encoder.down.0.block.0.norm1.weight", 128) };
    T_EQ_INT(detect("vae.safetensors", vae, 2, &d), SD_OK);
    T_EQ_INT(d.vae, SD_LAYOUT_LDM_BARE);
    T_EQ_INT(d.unet, SD_LAYOUT_NONE);
    const tdesc vaed[] = { T4("encoder.conv_in.weight", 128, 3, 3, 3), T1("encoder.down_blocks.0.resnets.0.norm1.weight", 128) };
    T_EQ_INT(detect("vaed.safetensors", vaed, 2, &d), SD_OK);
    T_EQ_INT(d.vae, SD_LAYOUT_DIFFUSERS);
    const tdesc te[] = { T2("text_model.embeddings.token_embedding.weight", 49408, 768) };
    T_EQ_INT(detect("te.safetensors", te, 1, &d), SD_OK);
    T_EQ_INT(d.text_encoder, SD_LAYOUT_DIFFUSERS);
    T_EQ_INT(d.family, SD_FAMILY_SD1);

    /* unsupported families are named */
    static const struct { tdesc t; sd_family f; const char *name; } other[] = {
        { T2("conditioner.embedders.0.model.token_embedding.weight", 49408, 1280), SD_FAMILY_SDXL_REFINER, "SDXL refiner" },
        { T2("double_blocks.0.img_attn.qkv.weight", 9216, 3072), SD_FAMILY_FLUX, "FLUX" },
        { T2("model.diffusion_model.double_blocks.0.img_attn.qkv.weight", 9216, 3072), SD_FAMILY_FLUX, "FLUX" },
        { T2("model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight", 4608, 1536), SD_FAMILY_SD3, "SD3" },
        { T2("model.diffusion_model.input_blocks.1.0.time_stack.0.in_layers.2.weight", 320, 320), SD_FAMILY_SVD, "Stable Video" },
        { T2("clip_txt_mapper.weight", 2048, 1280), SD_FAMILY_CASCADE, "Cascade" },
        { T2("low_scale_model.foo", 2, 2), SD_FAMILY_SD1_UPSCALER, "upscaler" },
    };
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
        T_EQ_INT(detect("o.safetensors", &other[i].t, 1, &d), SD_EUNSUPPORTED);
        T_EQ_INT(d.family, other[i].f);
        T_CHECKF(strstr(sd_errmsg(), other[i].name) && strstr(sd_errmsg(), "not supported"), "%s", sd_errmsg());
        T_CHECK(strstr(sd_errmsg(), "o.safetensors") != NULL);
    }
    /* the refiner: label_emb with context 1280 */
    const tdesc refiner[] = { T2("model.diffusion_model.label_emb.0.0.weight", 1536, 2560),
                              T2("model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight", 768, 1280) };
    T_EQ_INT(detect("r.safetensors", refiner, 2, &d), SD_EUNSUPPORTED);
    T_EQ_INT(d.family, SD_FAMILY_SDXL_REFINER);
    /* SDXL components: the first cross-attention is on level 1, context 2048 */
    const tdesc xl_unet[] = { T2("model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight", 640, 2048),
                              T2("model.diffusion_model.label_emb.0.0.weight", 1280, 2816) };
    T_EQ_INT(detect("x.safetensors", xl_unet, 2, &d), SD_OK);
    T_EQ_INT(d.family, SD_FAMILY_SDXL);
    T_EQ_INT(d.unet, SD_LAYOUT_LDM);
    T_EQ_INT(d.context_dim, 2048);
    const tdesc xl_unet_d[] = { T2("down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight", 640, 2048),
                                T2("add_embedding.linear_1.weight", 1280, 2816) };
    T_EQ_INT(detect("xd.safetensors", xl_unet_d, 2, &d), SD_OK);
    T_EQ_INT(d.unet, SD_LAYOUT_DIFFUSERS);
    T_EQ_INT(d.family, SD_FAMILY_SDXL);
    const tdesc xl_te[] = { T2("conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight", 49408, 768),
                            T2("conditioner.embedders.1.model.token_embedding.weight", 49408, 1280) };
    T_EQ_INT(detect("xt.safetensors", xl_te, 2, &d), SD_OK);
    T_EQ_INT(d.family, SD_FAMILY_SDXL);
    T_EQ_INT(d.text_encoder, SD_LAYOUT_LDM);
    T_EQ_INT(d.text_encoder2, SD_LAYOUT_LDM);
    T_EQ_STR(d.te2_prefix, "conditioner.embedders.1.model.");
    const tdesc xl_te2d[] = { T2("text_model.embeddings.token_embedding.weight", 49408, 1280),
                              T2("text_projection.weight", 1280, 1280) };
    T_EQ_INT(detect("xt2.safetensors", xl_te2d, 2, &d), SD_OK);
    T_EQ_INT(d.family, SD_FAMILY_SDXL);
    T_EQ_INT(d.text_encoder, SD_LAYOUT_NONE);
    T_EQ_INT(d.text_encoder2, SD_LAYOUT_DIFFUSERS);
    const tdesc w512[] = { T2("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", 320, 512) };
    T_EQ_INT(detect("w.safetensors", w512, 1, &d), SD_EUNSUPPORTED);
    T_CHECK(strstr(sd_errmsg(), "512") != NULL);
    const tdesc mixed[] = {
        T2("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", 320, 768),
        T2("cond_stage_model.model.token_embedding.weight", 49408, 1024),
    };
    T_EQ_INT(detect("m.safetensors", mixed, 2, &d), SD_EFORMAT);
    const tdesc none[] = { T1("foo.bar", 3) };
    T_EQ_INT(detect("n.safetensors", none, 1, &d), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "no UNet") != NULL);
    const tdesc unk[] = { T4("model.diffusion_model.input_blocks.0.0.weight", 320, 4, 3, 3) };
    T_EQ_INT(detect("u.safetensors", unk, 1, &d), SD_EUNSUPPORTED);
}

/* Full-size SD1/SD2/SDXL UNet layouts (names and shapes of every tensor, ldm and Diffusers naming) are
 * recognised as matching the preset; one wrong shape or an extra block is not. */
static void check_full(sd_family fam, int diffusers, int spoil)
{
    sd_model_config c;
    sd_model_config_preset(fam, &c);
    sd_params reg;
    sd_unet u;
    sd_params_init(&reg);
    if (sd_unet_init(&u, &reg, NULL, &c.unet)) {
        T_CHECK(0);
        sd_params_free(&reg);
        return;
    }
    size_t n = sd_params_count(&reg);
    tdesc *t = calloc(n + 1, sizeof *t);
    for (size_t i = 0; i < n; i++) {
        const sd_param *p = sd_params_at(&reg, i);
        if (diffusers) sd_unet_name_to_diffusers(&u, p->key, t[i].name, sizeof t[i].name);
        else snprintf(t[i].name, sizeof t[i].name, "model.diffusion_model.%s", p->key);
        t[i].nd = p->value.ndim;
        memcpy(t[i].s, p->value.shape, sizeof t[i].s);
        /* SD2 single files store proj_in/proj_out as linears; Diffusers SD1 as 1×1 convs: either is fine */
    }
    if (spoil == 1) t[5].s[0] += 1;
    if (spoil == 2) t[n++] = (tdesc)T1("model.diffusion_model.input_blocks.99.0.in_layers.0.weight", 320);
    sd_detect_info d;
    T_EQ_INT(detect("full.safetensors", t, n, &d), SD_OK);
    T_EQ_INT(d.family, fam);
    T_CHECKF(d.unet_matches_preset == !spoil, "family %d diffusers %d spoil %d", fam, diffusers, spoil);
    sd_model_config out;
    T_EQ_INT(sd_detect_config(&d, NULL, -1, &out), spoil ? SD_EUNSUPPORTED : SD_OK);
    free(t);
    sd_unet_free(&u);
    sd_params_free(&reg);
}

static void test_detect_full_layouts(void)
{
    check_full(SD_FAMILY_SD1, 0, 0);
    check_full(SD_FAMILY_SD2, 0, 0);
    check_full(SD_FAMILY_SD1, 1, 0);
    check_full(SD_FAMILY_SD2, 1, 0);
    check_full(SD_FAMILY_SD1, 0, 1);
    check_full(SD_FAMILY_SD2, 0, 2);
    check_full(SD_FAMILY_SDXL, 0, 0);
    check_full(SD_FAMILY_SDXL, 1, 0);
    check_full(SD_FAMILY_SDXL, 0, 1);
    check_full(SD_FAMILY_SDXL, 0, 2);
    check_full(SD_FAMILY_SDXL, 1, 1);
}

int main(void)
{
    T_RUN(test_presets);
    T_RUN(test_load_toml_json);
    T_RUN(test_load_sdxl);
    T_RUN(test_config_errors);
    T_RUN(test_detect_small);
    T_RUN(test_detect_full_layouts);
    T_DONE();
}
