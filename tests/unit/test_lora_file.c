/* lib/train/lora_file + meta: kohya names over a tiny UNet against a transcription of
 * LoRANetwork.create_modules over a Diffusers-named module tree (lora_names.txt), sshs_* hashes
 * against a transcription of precalculate_safetensors_hashes (lora_hashes.txt), ss_* metadata
 * against train_network.py's dict + str() (ss_metadata.txt), round trips, load errors. */
#include <math.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "base/half.h"
#include "io/jsonl.h"
#include "models/model_config.h"
#include "models/unet.h"
#include "test.h"
#include "train/lora_file.h"
#include "train/meta.h"
#include "train_golden.h"

/* ---- names ----------------------------------------------------------------------------------- */

static int in_list(char **list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(list[i], s)) return 1;
    return 0;
}

static void test_kohya_names(void)
{
    char b[256];
    T_EQ_INT(sd_lora_kohya_name("lora_te", "text_model.encoder.layers.0.mlp.fc1", b, sizeof b), 0);
    T_EQ_STR(b, "lora_te_text_model_encoder_layers_0_mlp_fc1");
    T_EQ_INT(sd_lora_kohya_name("lora_unet", "x", b, 8), SD_ERANGE);

    sd_model_config mc;
    T_EQ_INT(sd_model_config_preset(SD_FAMILY_SD1, &mc), 0);
    sd_unet_config *c = &mc.unet;
    c->model_channels = 32;
    c->n_levels = 3;
    c->channel_mult[0] = 1, c->channel_mult[1] = 2, c->channel_mult[2] = 2;
    for (int i = 0; i < 3; i++) c->num_res_blocks[i] = 2;
    c->n_attn = 2;
    c->attention_resolutions[0] = 1, c->attention_resolutions[1] = 2;
    c->num_heads = 2;
    c->num_head_channels = -1;
    c->context_dim = 48;
    for (int i = 0; i < 3; i++) c->transformer_depth[i] = 1;
    c->transformer_depth_middle = 1;
    c->use_linear_in_transformer = 0;
    sd_params reg;
    sd_params_init(&reg);
    sd_unet u;
    int rc = sd_unet_init(&u, &reg, "model.diffusion_model", c);
    T_EQ_INT(rc, 0);
    if (rc) { printf("# %s\n", sd_errmsg()); sd_params_free(&reg); return; }
    tg_file g = { 0 };
    T_CHECK(tg_open(&g, "lora_names.txt") == 0);
    char *lier[512], *c3[512];
    size_t nl = 0, nc = 0;
    for (char *p = g.text; p && *p;) {
        char *eol = strchr(p, '\n');
        if (eol) *eol = 0;
        if (!strncmp(p, "lierla ", 7) && nl < 512) lier[nl++] = p + 7;
        if (!strncmp(p, "c3lier ", 7) && nc < 512) c3[nc++] = p + 7;
        p = eol ? eol + 1 : NULL;
    }
    T_CHECK(nl > 50 && nc > nl);
    size_t ml = 0, mc3 = 0, bad = 0;
    for (size_t i = 0; i < sd_unet_layer_count(&u); i++) {
        const sd_unet_layer *L = sd_unet_layer_at(&u, i);
        if (L->role == SD_UNET_ROLE_OTHER) continue;
        T_CHECK(L->diffusers != NULL);
        if (!L->diffusers) continue;
        T_EQ_INT(sd_lora_kohya_name("lora_unet", L->diffusers, b, sizeof b), 0);
        if (L->role == SD_UNET_ROLE_TRANSFORMER) {
            if (in_list(lier, nl, b)) ml++;
            else if (bad++ < 5) printf("#   not in kohya's LierLa list: %s (%s)\n", b, L->key);
        }
        if (in_list(c3, nc, b)) mc3++;
        else if (bad++ < 5) printf("#   not in kohya's C3Lier list: %s (%s)\n", b, L->key);
    }
    T_EQ_INT(bad, 0);
    T_EQ_INT(ml, nl);       /* every kohya name is produced, none twice (the lists are unique) */
    T_EQ_INT(mc3, nc);
    printf("# %zu LierLa and %zu C3Lier names equal kohya's\n", ml, mc3);
    tg_close(&g);
    sd_unet_free(&u);
    sd_params_free(&reg);
}

/* ---- a small network -------------------------------------------------------------------------- */

typedef struct net {
    sd_params reg;
    sd_lora l[3];
    sd_lora_ref ref[3];
    int n;
} net;

static const struct { const char *name; int64_t in, out; int rank; float alpha; int four; } hmods[3] = {
    { "lora_te_text_model_encoder_layers_0_mlp_fc1", 48, 96, 4, 1, 0 },
    { "lora_unet_down_blocks_0_attentions_0_proj_in", 32, 32, 4, 2, 1 },
    { "lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_2", 40000, 16, 8, 8, 0 },
};

static int net_make(net *m, int rank_override, float alpha_override)
{
    memset(m, 0, sizeof *m);
    sd_params_init(&m->reg);
    m->n = 3;
    for (int i = 0; i < 3; i++) {
        int rank = rank_override > 0 && i == 0 ? rank_override : hmods[i].rank;
        float alpha = alpha_override > 0 && i == 0 ? alpha_override : hmods[i].alpha;
        int rc = sd_lora_init(&m->l[i], &m->reg, hmods[i].name, hmods[i].in, hmods[i].out, rank, alpha, 0, 1, 1,
                              sd_conv2d_geom_make(1, 0), hmods[i].four);
        if (rc) return rc;
        m->ref[i].name = hmods[i].name;
        m->ref[i].lora = &m->l[i];
    }
    return sd_params_alloc(&m->reg, SD_DEV_CPU);
}

static void net_fill(net *m)
{
    for (int k = 0; k < 3; k++)
        for (int j = 0; j < 2; j++) {
            sd_param *p = j ? m->l[k].up : m->l[k].down;
            float *v = p->value.data;
            int64_t n = sd_tensor_numel(&p->value);
            for (int64_t i = 0; i < n; i++) v[i] = (float)(((i * 7919 + (2 * k + j) * 13) % 1000 - 500) / 256.0);
        }
}

static void net_free(net *m)
{
    for (int i = 0; i < m->n; i++) sd_lora_free(&m->l[i]);
    sd_params_free(&m->reg);
}

static void test_hashes(void)
{
    tg_file g = { 0 };
    T_CHECK(tg_open(&g, "lora_hashes.txt") == 0);
    if (!g.text) return;
    sd_kv meta;
    sd_kv_init(&meta);
    for (char *p = strstr(g.text, "\nmeta "); p; p = strstr(p + 1, "\nmeta ")) {
        char k[64], v[64];
        T_EQ_INT(sscanf(p + 6, "%63s %63[^\n]", k, v), 2);
        T_EQ_INT(sd_kv_set(&meta, k, v), 0);
    }
    T_EQ_INT(meta.n, 6);
    net m;
    T_EQ_INT(net_make(&m, 0, 0), 0);
    net_fill(&m);
    static const struct { const char *name; sd_st_dtype dt; int prec, aint; } cases[3] = {
        { "f32", SD_ST_F32, 0, 0 }, { "fp16", SD_ST_F16, 1, 0 }, { "int_alpha", SD_ST_F32, 0, 1 } };
    for (int c = 0; c < 3; c++) {
        char key[64], mh_exp[80] = "", lh_exp[16] = "";
        snprintf(key, sizeof key, "\ncase %s ", cases[c].name);
        const char *p = strstr(g.text, key);
        T_CHECK(p != NULL);
        if (p) sscanf(p + strlen(key), "%79s %15s", mh_exp, lh_exp);
        sd_lora_save_opts o = { cases[c].dt, cases[c].prec, cases[c].aint, &meta, 0 };
        char mh[65], lh[9];
        const char *path = t_path("hash.safetensors");
        T_EQ_INT(sd_lora_file_save(path, m.ref, 3, &o, mh, lh), 0);
        T_EQ_STR(mh, mh_exp);
        T_EQ_STR(lh, lh_exp);
        sd_safetensors *st;
        T_EQ_INT(sd_safetensors_open(path, &st), 0);
        if (!st) continue;
        T_EQ_STR(sd_safetensors_meta_get(st, "sshs_model_hash"), mh_exp);
        T_EQ_STR(sd_safetensors_meta_get(st, "sshs_legacy_hash"), lh_exp);
        T_EQ_STR(sd_safetensors_meta_get(st, "modelspec.title"), "not hashed");
        char mh2[65], lh2[9];
        T_EQ_INT(sd_lora_file_hashes_of(st, mh2, lh2), 0);
        T_EQ_STR(mh2, mh_exp);
        T_EQ_STR(lh2, lh_exp);
        const sd_st_tensor *a = sd_safetensors_find(st, "lora_unet_down_blocks_0_attentions_0_proj_in.alpha");
        T_CHECK(a && a->ndim == 0);
        if (a) T_EQ_INT(a->dtype, c == 1 ? SD_ST_F16 : c == 2 ? SD_ST_I64 : SD_ST_F32);
        const sd_st_tensor *d = sd_safetensors_find(st, "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight");
        T_CHECK(d && d->ndim == 4 && d->shape[0] == 4 && d->shape[1] == 32 && d->shape[2] == 1);
        sd_safetensors_close(st);
    }
    printf("# sshs_model_hash/sshs_legacy_hash equal the Python transcription for f32, fp16 (file < 1 MiB) and I64-alpha files\n");
    net_free(&m);
    sd_kv_free(&meta);
    tg_close(&g);
}

static void test_roundtrip_and_load_errors(void)
{
    net a, b;
    T_EQ_INT(net_make(&a, 0, 0), 0);
    net_fill(&a);
    const char *path = t_path("rt.safetensors");
    sd_lora_save_opts o = { SD_ST_F32, 0, 0, NULL, 0 };
    T_EQ_INT(sd_lora_file_save(path, a.ref, 3, &o, NULL, NULL), 0);
    sd_safetensors *st;
    T_EQ_INT(sd_safetensors_open(path, &st), 0);
    T_CHECK(sd_safetensors_meta_get(st, "sshs_model_hash") != NULL);
    sd_lora_file_info info;
    T_EQ_INT(sd_lora_file_scan(st, &info), 0);
    T_EQ_INT(info.n, 3);
    if (info.n == 3) {
        T_EQ_STR(info.mods[1].name, "lora_unet_down_blocks_0_attentions_0_proj_in");
        T_EQ_INT(info.mods[1].conv4d, 1);
        T_EQ_INT(info.mods[1].rank, 4);
        T_EQ_INT(info.mods[1].in, 32);
        T_EQ_INT(info.mods[1].out, 32);
        T_NEAR(info.mods[1].alpha, 2.0, 0);
        T_EQ_INT(info.mods[2].rank, 8);
        T_EQ_INT(info.mods[2].in, 40000);
    }
    sd_lora_file_info_free(&info);
    T_EQ_INT(net_make(&b, 0, 0), 0);
    size_t nl = 0;
    T_EQ_INT(sd_lora_file_load(st, b.ref, 3, 0, &nl), 0);
    T_EQ_INT(nl, 3);
    T_CHECK(!memcmp(a.reg.value_mem, b.reg.value_mem, a.reg.value_bytes));
    /* missing: a network with a module the file lacks */
    sd_lora_ref extra[4] = { b.ref[0], b.ref[1], b.ref[2], { "lora_unet_extra", &b.l[0] } };
    T_EQ_INT(sd_lora_file_load(st, extra, 4, 0, NULL), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "1 module of the network is missing from the file: lora_unet_extra") != NULL);
    T_EQ_INT(sd_lora_file_load(st, extra, 4, SD_LORA_LOAD_ALLOW_MISSING, &nl), 0);
    T_EQ_INT(nl, 3);
    /* unexpected */
    T_EQ_INT(sd_lora_file_load(st, b.ref, 2, 0, NULL), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "not in the network") != NULL);
    T_EQ_INT(sd_lora_file_load(st, b.ref, 2, SD_LORA_LOAD_ALLOW_UNEXPECTED, NULL), 0);
    net_free(&b);
    /* rank and alpha mismatch */
    T_EQ_INT(net_make(&b, 2, 0), 0);
    T_EQ_INT(sd_lora_file_load(st, b.ref, 3, 0, NULL), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "rank 4 in the file, 2 in the network") != NULL);
    net_free(&b);
    T_EQ_INT(net_make(&b, 0, 3), 0);
    memset(b.reg.value_mem, 0, b.reg.value_bytes);
    T_EQ_INT(sd_lora_file_load(st, b.ref, 3, 0, NULL), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "alpha 1 in the file, 3 in the network") != NULL);
    /* nothing was loaded by the failed call */
    int zero = 1;
    for (size_t i = 0; i < b.reg.value_bytes; i++) zero &= ((uint8_t *)b.reg.value_mem)[i] == 0;
    T_CHECK(zero);
    T_EQ_INT(sd_lora_file_load(st, b.ref, 3, SD_LORA_LOAD_IGNORE_ALPHA, NULL), 0);
    net_free(&b);
    sd_safetensors_close(st);

    /* bf16 save: values rounded once */
    o.dtype = SD_ST_BF16;
    o.precision_given = 1;
    T_EQ_INT(sd_lora_file_save(path, a.ref, 3, &o, NULL, NULL), 0);
    T_EQ_INT(sd_safetensors_open(path, &st), 0);
    T_EQ_INT(net_make(&b, 0, 0), 0);
    T_EQ_INT(sd_lora_file_load(st, b.ref, 3, 0, NULL), 0);
    const float *x = a.l[2].down->value.data, *y = b.l[2].down->value.data;
    int ok = 1;
    for (int i = 0; i < 1000; i++) ok &= y[i] == sd_bf16_to_f32(sd_f32_to_bf16(x[i]));
    T_CHECK(ok);
    const sd_st_tensor *al = sd_safetensors_find(st, "lora_te_text_model_encoder_layers_0_mlp_fc1.alpha");
    T_CHECK(al && al->dtype == SD_ST_BF16);
    net_free(&b);
    sd_safetensors_close(st);
    net_free(&a);
}

static void write_st(const char *path, const char *const *names, const int64_t (*shapes)[4], const int *nd, int n,
                     sd_st_dtype dt)
{
    sd_safetensors_writer *w;
    sd_safetensors_writer_new(&w);
    static float buf[4096];
    for (int i = 0; i < n; i++) sd_safetensors_writer_add_f32(w, names[i], dt, nd[i], shapes[i], buf);
    T_EQ_INT(sd_safetensors_writer_write(w, path), 0);
    sd_safetensors_writer_free(w);
}

static int scan_file(const char *path)
{
    sd_safetensors *st;
    int rc = sd_safetensors_open(path, &st);
    if (rc) return rc;
    sd_lora_file_info info;
    rc = sd_lora_file_scan(st, &info);
    if (!rc) sd_lora_file_info_free(&info);
    sd_safetensors_close(st);
    return rc;
}

static void test_scan_errors(void)
{
    const char *p = t_path("bad.safetensors");
    static const int64_t sh[4][4] = { { 4, 8 }, { 16, 4 }, { 0 }, { 16, 3 } };
    const char *n1[] = { "lora_unet_a.hada_w1_a", "lora_unet_a.hada_w1_b" };
    static const int nd2[] = { 2, 2, 0, 2 };
    write_st(p, n1, sh, nd2, 2, SD_ST_F32);
    T_EQ_INT(scan_file(p), SD_EUNSUPPORTED);
    T_CHECK(strstr(sd_errmsg(), "LyCORIS LoHa") != NULL);
    const char *n2[] = { "lora_unet_a.lora_down.weight" };
    write_st(p, n2, sh, nd2, 1, SD_ST_F32);
    T_EQ_INT(scan_file(p), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "no lora_up") != NULL);
    const char *n3[] = { "lora_unet_a.lora_down.weight", "lora_unet_a.lora_up.weight", "lora_unet_b.alpha", "x" };
    write_st(p, n3, sh, nd2, 3, SD_ST_F32);
    T_EQ_INT(scan_file(p), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "lora_unet_b.alpha' has no matching") != NULL);
    const char *n5[] = { "lora_unet_a.lora_down.weight", "lora_unet_a.lora_up.weight" };
    static const int64_t sh5[2][4] = { { 4, 8 }, { 16, 3 } };
    write_st(p, n5, sh5, nd2, 2, SD_ST_F32);
    T_EQ_INT(scan_file(p), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "expected [out,4]") != NULL);
    const char *n6[] = { "model.diffusion_model.x.weight" };
    write_st(p, n6, sh, nd2, 1, SD_ST_F32);
    T_EQ_INT(scan_file(p), SD_EFORMAT);
    /* truncated file */
    const char *q = t_path("trunc.safetensors");
    write_st(q, n5, (const int64_t (*)[4])sh, nd2, 2, SD_ST_F32);
    FILE *f = fopen(q, "r+b");
    fseek(f, 0, SEEK_END);
    long L = ftell(f);
    T_EQ_INT(ftruncate(fileno(f), L - 10), 0);
    fclose(f);
    T_EQ_INT(scan_file(q), SD_EFORMAT);
}

/* ---- metadata ------------------------------------------------------------------------------ */

static void test_ss_metadata(void)
{
    sd_ss_facts f;
    sd_ss_facts_init(&f);
    sd_pyv *v = f.v;
    v[SD_SS_SESSION_ID] = sd_pyv_int(3141592653LL);
    v[SD_SS_TRAINING_STARTED_AT] = sd_pyv_float(1732650000.123456);
    v[SD_SS_OUTPUT_NAME] = sd_pyv_str("tiny");
    v[SD_SS_LEARNING_RATE] = sd_pyv_float(1e-4);
    v[SD_SS_TEXT_ENCODER_LR] = sd_pyv_float(5e-5);
    v[SD_SS_UNET_LR] = sd_pyv_none();
    v[SD_SS_NUM_TRAIN_IMAGES] = sd_pyv_int(40);
    v[SD_SS_NUM_VALIDATION_IMAGES] = sd_pyv_int(0);
    v[SD_SS_NUM_REG_IMAGES] = sd_pyv_int(0);
    v[SD_SS_NUM_BATCHES_PER_EPOCH] = sd_pyv_int(20);
    v[SD_SS_NUM_EPOCHS] = sd_pyv_int(80);
    v[SD_SS_GRADIENT_CHECKPOINTING] = sd_pyv_bool(1);
    v[SD_SS_GRADIENT_ACCUMULATION_STEPS] = sd_pyv_int(2);
    v[SD_SS_MAX_TRAIN_STEPS] = sd_pyv_int(1600);
    v[SD_SS_LR_WARMUP_STEPS] = sd_pyv_float(0.1);
    v[SD_SS_LR_SCHEDULER] = sd_pyv_str("cosine");
    v[SD_SS_NETWORK_MODULE] = sd_pyv_str("networks.lora");
    v[SD_SS_NETWORK_DIM] = sd_pyv_int(4);
    v[SD_SS_NETWORK_ALPHA] = sd_pyv_int(1);
    v[SD_SS_MIXED_PRECISION] = sd_pyv_str("no");
    v[SD_SS_FULL_FP16] = sd_pyv_bool(0);
    v[SD_SS_V2] = sd_pyv_bool(0);
    v[SD_SS_BASE_MODEL_VERSION] = sd_pyv_str("sd_v1");
    v[SD_SS_CACHE_LATENTS] = sd_pyv_bool(1);
    v[SD_SS_SEED] = sd_pyv_int(42);
    v[SD_SS_LOWRAM] = sd_pyv_bool(0);
    v[SD_SS_NOISE_OFFSET] = sd_pyv_float(0.05);
    v[SD_SS_MULTIRES_NOISE_DISCOUNT] = sd_pyv_float(0.3);
    v[SD_SS_ZERO_TERMINAL_SNR] = sd_pyv_bool(0);
    v[SD_SS_OPTIMIZER] = sd_pyv_str("torch.optim.adamw.AdamW(weight_decay=0.1)");
    v[SD_SS_MAX_GRAD_NORM] = sd_pyv_float(1.0);
    v[SD_SS_CAPTION_DROPOUT_RATE] = sd_pyv_float(0.0);
    v[SD_SS_CAPTION_DROPOUT_EVERY_N_EPOCHS] = sd_pyv_int(0);
    v[SD_SS_CAPTION_TAG_DROPOUT_RATE] = sd_pyv_float(0.0);
    v[SD_SS_PRIOR_LOSS_WEIGHT] = sd_pyv_float(1.0);
    v[SD_SS_MIN_SNR_GAMMA] = sd_pyv_float(5.0);
    v[SD_SS_DEBIASED_ESTIMATION] = sd_pyv_bool(0);
    v[SD_SS_NOISE_OFFSET_RANDOM_STRENGTH] = sd_pyv_bool(0);
    v[SD_SS_IP_NOISE_GAMMA_RANDOM_STRENGTH] = sd_pyv_bool(0);
    v[SD_SS_LOSS_TYPE] = sd_pyv_str("l2");
    v[SD_SS_HUBER_SCHEDULE] = sd_pyv_str("snr");
    v[SD_SS_HUBER_SCALE] = sd_pyv_float(1.0);
    v[SD_SS_HUBER_C] = sd_pyv_float(0.1);
    v[SD_SS_FP8_BASE] = sd_pyv_bool(0);
    v[SD_SS_FP8_BASE_UNET] = sd_pyv_bool(0);
    v[SD_SS_VALIDATION_SPLIT] = sd_pyv_float(0.0);
    v[SD_SS_BATCH_SIZE_PER_DEVICE] = sd_pyv_int(2);
    v[SD_SS_TOTAL_BATCH_SIZE] = sd_pyv_int(4);
    v[SD_SS_RESOLUTION] = sd_pyv_str("(512, 768)");
    v[SD_SS_COLOR_AUG] = sd_pyv_bool(0);
    v[SD_SS_FLIP_AUG] = sd_pyv_bool(1);
    v[SD_SS_RANDOM_CROP] = sd_pyv_bool(0);
    v[SD_SS_SHUFFLE_CAPTION] = sd_pyv_bool(1);
    v[SD_SS_ENABLE_BUCKET] = sd_pyv_bool(1);
    v[SD_SS_BUCKET_NO_UPSCALE] = sd_pyv_bool(0);
    v[SD_SS_MIN_BUCKET_RESO] = sd_pyv_int(256);
    v[SD_SS_MAX_BUCKET_RESO] = sd_pyv_int(1024);
    v[SD_SS_KEEP_TOKENS] = sd_pyv_int(1);
    v[SD_SS_DATASET_DIRS] = sd_pyv_str("{\"10_sks dog\": {\"n_repeats\": 10, \"img_count\": 4}}");
    v[SD_SS_REG_DATASET_DIRS] = sd_pyv_str("{}");
    v[SD_SS_TAG_FREQUENCY] = sd_pyv_str("{\"10_sks dog\": {\"sks dog\": 4, \"caf\\u00e9\": 1}}");
    v[SD_SS_BUCKET_INFO] = sd_pyv_str("{\"buckets\": {\"0\": {\"resolution\": [512, 768], \"count\": 40}}, \"mean_img_ar_error\": 0.0}");
    static const char *const nk[] = { "conv_dim", "conv_alpha", "note" };
    static const char *const nv[] = { "4", "1", "caf\xc3\xa9" };
    char *na = NULL;
    T_EQ_INT(sd_py_json_str_dict(nk, nv, 3, &na), 0);
    v[SD_SS_NETWORK_ARGS] = sd_pyv_str(na);
    v[SD_SS_SD_MODEL_NAME] = sd_pyv_str("tiny.safetensors");
    sd_kv m;
    sd_kv_init(&m);
    T_EQ_INT(sd_ss_metadata(&f, 0, &m), 0);
    tg_file g = { 0 };
    T_CHECK(tg_open(&g, "ss_metadata.txt") == 0);
    size_t i = 0, bad = 0;
    for (char *p = g.text; p && *p;) {
        char *eol = strchr(p, '\n');
        if (eol) *eol = 0;
        char *tab = strchr(p, '\t');
        if (*p != '#' && tab) {
            *tab = 0;
            if (i >= m.n || strcmp(m.keys[i], p) || strcmp(m.vals[i], tab + 1)) {
                if (bad++ < 5) printf("#   entry %zu: expected %s=%s, got %s=%s\n", i, p, tab + 1,
                                      i < m.n ? m.keys[i] : "-", i < m.n ? m.vals[i] : "-");
            }
            i++;
        }
        p = eol ? eol + 1 : NULL;
    }
    T_EQ_INT(bad, 0);
    T_EQ_INT(i, m.n);
    printf("# %zu ss_* keys equal train_network.py's dict in order and str() form\n", m.n);
    tg_close(&g);
    T_EQ_INT(sd_ss_metadata_at_save(&m, 1732650100.5, 1600, 80, 0), 0);
    T_EQ_STR(sd_kv_get(&m, "ss_training_finished_at"), "1732650100.5");
    T_EQ_STR(sd_kv_get(&m, "ss_steps"), "1600");
    T_EQ_STR(m.keys[m.n - 1], "ss_epoch");
    T_EQ_INT(sd_ss_metadata_at_save(&m, 1732650200.0, 1700, 81, 0), 0);
    T_EQ_STR(m.keys[m.n - 1], "ss_epoch");   /* position kept */
    T_EQ_STR(sd_kv_get(&m, "ss_epoch"), "81");
    sd_kv_free(&m);
    /* --no_metadata */
    sd_kv_init(&m);
    T_EQ_INT(sd_ss_metadata(&f, 1, &m), 0);
    T_EQ_INT(m.n, 6);
    T_EQ_STR(m.keys[0], "ss_v2");
    T_EQ_STR(m.keys[5], "ss_network_args");
    sd_kv_free(&m);
    free(na);
    /* dataset-config block */
    sd_ss_facts_init(&f);
    f.use_dataset_config = 1;
    f.v[SD_SS_DATASETS] = sd_pyv_str("[]");
    sd_kv_init(&m);
    T_EQ_INT(sd_ss_metadata(&f, 0, &m), 0);
    T_EQ_INT(m.n, SD_SS_ALWAYS_END + 3);
    T_EQ_STR(sd_kv_get(&m, "ss_datasets"), "[]");
    T_EQ_STR(sd_kv_get(&m, "ss_tag_frequency"), "None");
    T_EQ_STR(sd_kv_get(&m, "ss_sd_scripts_commit_hash"), "(unknown)");
    T_CHECK(sd_kv_get(&m, "ss_resolution") == NULL);
    sd_kv_free(&m);
}

static void test_modelspec(void)
{
    sd_modelspec_args a;
    memset(&a, 0, sizeof a);
    a.lora = 1;
    a.timestamp = 1700000000.75;
    a.clip_skip = -1;
    a.trigger_phrase = "sks dog";
    a.implementation_version = "sd-train/0.1.0";
    sd_kv m;
    sd_kv_init(&m);
    T_EQ_INT(sd_modelspec_metadata(&a, &m), 0);
    static const char *const keys[] = { "modelspec.architecture", "modelspec.implementation", "modelspec.title",
                                        "modelspec.resolution", "modelspec.sai_model_spec", "modelspec.date",
                                        "modelspec.prediction_type", "modelspec.trigger_phrase",
                                        "modelspec.implementation_version" };
    T_EQ_INT(m.n, 9);
    for (size_t i = 0; i < 9 && i < m.n; i++) T_EQ_STR(m.keys[i], keys[i]);
    T_EQ_STR(sd_kv_get(&m, "modelspec.architecture"), "stable-diffusion-v1/lora");
    T_EQ_STR(sd_kv_get(&m, "modelspec.implementation"), "diffusers");
    T_EQ_STR(sd_kv_get(&m, "modelspec.title"), "LoRA@1700000000.75");
    T_EQ_STR(sd_kv_get(&m, "modelspec.resolution"), "512x512");
    T_EQ_STR(sd_kv_get(&m, "modelspec.sai_model_spec"), "1.0.1");
    T_EQ_STR(sd_kv_get(&m, "modelspec.prediction_type"), "epsilon");
    time_t t = 1700000000;
    struct tm tm;
    localtime_r(&t, &tm);
    char d[32];
    strftime(d, sizeof d, "%Y-%m-%dT%H:%M:%S", &tm);
    T_EQ_STR(sd_kv_get(&m, "modelspec.date"), d);
    sd_kv_free(&m);
    /* SDXL LoRA, v2 + v, timesteps, clip skip, title, resolution */
    memset(&a, 0, sizeof a);
    a.lora = 1, a.sdxl = 1, a.timestamp = 1, a.title = "my lora", a.clip_skip = 2;
    a.has_timesteps = 1, a.min_timestep = 0, a.max_timestep = 500;
    a.reso_w = 1024, a.reso_h = 768;
    sd_kv_init(&m);
    T_EQ_INT(sd_modelspec_metadata(&a, &m), 0);
    T_EQ_STR(sd_kv_get(&m, "modelspec.architecture"), "stable-diffusion-xl-v1-base/lora");
    T_EQ_STR(sd_kv_get(&m, "modelspec.implementation"), "https://github.com/Stability-AI/generative-models");
    T_EQ_STR(sd_kv_get(&m, "modelspec.title"), "my lora");
    T_EQ_STR(sd_kv_get(&m, "modelspec.resolution"), "1024x768");
    T_EQ_STR(sd_kv_get(&m, "modelspec.timestep_range"), "0,500");
    T_EQ_STR(sd_kv_get(&m, "modelspec.encoder_layer"), "2");
    T_EQ_STR(sd_kv_get(&m, "modelspec.implementation_version"), "sd-scripts/unknown");
    sd_kv_free(&m);
    memset(&a, 0, sizeof a);
    a.lora = 1, a.v2 = 1, a.v_parameterization = 1, a.clip_skip = -1;
    a.thumbnail = t_path("thumb.png");
    t_write_file(a.thumbnail, "abcd", 4);
    sd_kv_init(&m);
    T_EQ_INT(sd_modelspec_metadata(&a, &m), 0);
    T_EQ_STR(sd_kv_get(&m, "modelspec.architecture"), "stable-diffusion-v2-768-v/lora");
    T_EQ_STR(sd_kv_get(&m, "modelspec.resolution"), "768x768");
    T_EQ_STR(sd_kv_get(&m, "modelspec.prediction_type"), "v");
    T_EQ_STR(sd_kv_get(&m, "modelspec.thumbnail"), "data:image/png;base64,YWJjZA==");
    sd_kv_free(&m);
    a.thumbnail = "";   /* not converted: written as given */
    sd_kv_init(&m);
    T_EQ_INT(sd_modelspec_metadata(&a, &m), 0);
    T_EQ_STR(sd_kv_get(&m, "modelspec.thumbnail"), "");
    sd_kv_free(&m);
}

static void test_py_json(void)
{
    static const char *const k[] = { "a\"b", "t\n", "\xf0\x9f\x98\x80" };
    static const char *const v[] = { "x\\y", "\x7f", "" };
    char *s = NULL;
    T_EQ_INT(sd_py_json_str_dict(k, v, 3, &s), 0);
    T_EQ_STR(s, "{\"a\\\"b\": \"x\\\\y\", \"t\\n\": \"\\u007f\", \"\\ud83d\\ude00\": \"\"}");
    free(s);
    T_EQ_INT(sd_py_json_str_dict(k, v, 0, &s), 0);
    T_EQ_STR(s, "{}");
    free(s);
    static const char *const badv[] = { "\xff" };
    T_EQ_INT(sd_py_json_str_dict(k, badv, 1, &s), SD_EINVAL);
    /* a nested value: expected text from Python's json.dumps of the same structure */
    static const char src[] = "{\"datasets\":[{\"is_dreambooth\":true,\"batch_size_per_device\":2,\"resolution\":[512,768],"
        "\"min_bucket_reso\":null,\"tag_frequency\":{\"10_sks dog\":{\"caf\xc3\xa9\":1,\"\xf0\x9f\x98\x80\":2}},"
        "\"bucket_info\":{\"buckets\":{\"0\":{\"resolution\":[512,768],\"count\":40}},\"mean_img_ar_error\":0},"
        "\"x\":1.5e-07,\"y\":-3,\"z\":1e16}]}";
    jv jvv;
    T_EQ_INT(sd_json_parse(src, sizeof src - 1, &jvv), 0);
    static const char *const fk[] = { "mean_img_ar_error", NULL };
    T_EQ_INT(sd_py_json_dump(jvv, fk, &s), 0);
    T_EQ_STR(s, "{\"datasets\": [{\"is_dreambooth\": true, \"batch_size_per_device\": 2, \"resolution\": [512, 768], "
                "\"min_bucket_reso\": null, \"tag_frequency\": {\"10_sks dog\": {\"caf\\u00e9\": 1, \"\\ud83d\\ude00\": 2}}, "
                "\"bucket_info\": {\"buckets\": {\"0\": {\"resolution\": [512, 768], \"count\": 40}}, "
                "\"mean_img_ar_error\": 0.0}, \"x\": 1.5e-07, \"y\": -3, \"z\": 1e+16}]}");
    free(s);
    jv_free(jvv);
}

int main(void)
{
    T_RUN(test_kohya_names);
    T_RUN(test_hashes);
    T_RUN(test_roundtrip_and_load_errors);
    T_RUN(test_scan_errors);
    T_RUN(test_ss_metadata);
    T_RUN(test_modelspec);
    T_RUN(test_py_json);
    T_DONE();
}
