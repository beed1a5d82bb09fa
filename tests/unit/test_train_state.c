/* lib/train/state: save → load bit-identical; atomic replacement; corrupted, truncated and
 * mismatching states give clear errors; option compatibility; checkpoint/state names and the
 * reference's retention arithmetic. */
#include <dirent.h>
#include <jv.h>
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "base/fileio.h"
#include "test.h"
#include "train/state.h"

typedef struct rig {
    sd_params reg;
    sd_param *p[4];
    sd_optim opt;
} rig;

static int rig_make(rig *r, int64_t rank)
{
    sd_params_init(&r->reg);
    int rc = sd_params_add(&r->reg, "lora_unet_a", "lora_down.weight", SD_DIMS(rank, 6), SD_PARAM_TRAINABLE, &r->p[0]);
    if (!rc) rc = sd_params_add(&r->reg, "lora_unet_a", "lora_up.weight", SD_DIMS(5, rank), SD_PARAM_TRAINABLE, &r->p[1]);
    if (!rc) rc = sd_params_add(&r->reg, "lora_te_b", "lora_down.weight", SD_DIMS(rank, 3, 3, 3), SD_PARAM_TRAINABLE, &r->p[2]);
    if (!rc) rc = sd_params_add(&r->reg, NULL, "frozen.weight", SD_DIMS(7), 0, &r->p[3]);
    if (!rc) rc = sd_params_alloc(&r->reg, SD_DEV_CPU);
    if (rc) return rc;
    sd_optim_config cfg;
    sd_optim_config_default(&cfg, SD_OPTIM_ADAMW);
    sd_param *g0[2] = { r->p[2] }, *g1[2] = { r->p[0], r->p[1] };
    sd_optim_group_desc gd[2] = { { "textencoder", 5e-5, g0, 1 }, { "unet", 1e-4, g1, 2 } };
    return sd_optim_init(&r->opt, &cfg, gd, 2);
}

static void rig_free(rig *r)
{
    sd_optim_free(&r->opt);
    sd_params_free(&r->reg);
}

static void rig_train(rig *r, int steps)
{
    for (int s = 0; s < steps; s++) {
        for (int i = 0; i < 3; i++) {
            float *g = r->p[i]->grad.data, *v = r->p[i]->value.data;
            for (int64_t j = 0; j < sd_tensor_numel(&r->p[i]->value); j++) {
                if (s == 0) v[j] = sinf((float)(j + 10 * i));
                g[j] = cosf((float)(j * 3 + s + i));
            }
        }
        uint8_t skip[3] = { 0, 0, (uint8_t)(s == 1) };
        sd_optim_step(&r->opt, NULL, skip);
    }
}

static const char *opts_json = "{\"network_dim\":4,\"network_alpha\":1.0,\"network_module\":\"networks.lora\",\"lr\":1e-4}";

static void save_one(rig *a, const char *dir, int64_t step)
{
    double lw[3] = { 0.5, 0.25, 0.1 };
    sd_train_state_in in = { { step, 2, 7, step * 2, 0xfedcba9876543210ULL }, &a->reg, &a->opt, opts_json, lw, 3,
                             0.8500000000000001, NULL, NULL };
    T_EQ_INT(sd_train_state_save(dir, &in), 0);
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    if (d) closedir(d);
    return n;
}

static void test_roundtrip(void)
{
    rig a, b;
    T_EQ_INT(rig_make(&a, 4), 0);
    rig_train(&a, 3);
    const char *parent = t_path("rt");
    mkdir(parent, 0755);
    char dir[600];
    snprintf(dir, sizeof dir, "%s/tiny-step00000003-state", parent);
    save_one(&a, dir, 3);
    T_EQ_INT(count_entries(parent), 1);
    T_EQ_INT(rig_make(&b, 4), 0);
    sd_train_state_out o;
    T_EQ_INT(sd_train_state_load(dir, &b.reg, &b.opt, &o), 0);
    T_EQ_INT(o.prog.global_step, 3);
    T_EQ_INT(o.prog.epoch, 2);
    T_EQ_INT(o.prog.step_in_epoch, 7);
    T_EQ_INT(o.prog.sched_step, 6);
    T_CHECK(o.prog.seed == 0xfedcba9876543210ULL);
    T_EQ_INT(o.loss_window_n, 3);
    T_CHECK(o.loss_window && o.loss_window[2] == 0.1);
    T_CHECK(o.loss_total == 0.8500000000000001);
    T_CHECK(o.options_json && strstr(o.options_json, "\"network_dim\":4") != NULL);
    /* trainable values bit-identical; the frozen one untouched (zero) */
    for (int i = 0; i < 3; i++)
        T_CHECK(!memcmp(a.p[i]->value.data, b.p[i]->value.data, sd_tensor_nbytes(&a.p[i]->value)));
    T_CHECK(((float *)b.p[3]->value.data)[0] == 0.0f);
    T_CHECK(!memcmp(a.opt.state, b.opt.state, a.opt.state_floats * sizeof(float)));
    for (size_t i = 0; i < a.opt.nparams; i++) T_EQ_INT(b.opt.params[i].step, a.opt.params[i].step);
    T_EQ_INT(b.opt.params[2].step, 2);   /* skipped once */
    /* continuing both gives the same numbers */
    rig_train(&a, 2);
    rig_train(&b, 2);
    T_CHECK(!memcmp(a.reg.value_mem, b.reg.value_mem, a.reg.value_bytes));
    sd_train_state_out_free(&o);
    /* overwrite in place: the directory is swapped, nothing is left behind */
    save_one(&a, dir, 5);
    T_EQ_INT(count_entries(parent), 1);
    T_EQ_INT(sd_train_state_load(dir, &b.reg, &b.opt, &o), 0);
    T_EQ_INT(o.prog.global_step, 5);
    sd_train_state_out_free(&o);
    /* train_state.json-compatible fields */
    char p[700];
    snprintf(p, sizeof p, "%s/state.json", dir);
    char *text;
    size_t n;
    T_EQ_INT(sd_read_file(p, 0, &text, &n), 0);
    T_CHECK(strstr(text, "\"current_epoch\":3,\"current_step\":5") != NULL);
    free(text);
    /* load without an optimizer: weights only */
    rig c;
    T_EQ_INT(rig_make(&c, 4), 0);
    T_EQ_INT(sd_train_state_load(dir, &c.reg, NULL, &o), 0);
    T_CHECK(!memcmp(a.p[0]->value.data, c.p[0]->value.data, sd_tensor_nbytes(&a.p[0]->value)));
    sd_train_state_out_free(&o);
    rig_free(&c);
    rig_free(&a);
    rig_free(&b);
}

/* Replace the first `from` in DIR/state.json by `to`. */
static void edit_state_json(const char *dir, const char *from, const char *to)
{
    char p[700];
    snprintf(p, sizeof p, "%s/state.json", dir);
    char *text;
    size_t n;
    T_EQ_INT(sd_read_file(p, 0, &text, &n), 0);
    char *at = strstr(text, from);
    T_CHECK(at != NULL);
    if (!at) { free(text); return; }
    FILE *f = fopen(p, "wb");
    fwrite(text, 1, (size_t)(at - text), f);
    fputs(to, f);
    fputs(at + strlen(from), f);
    fclose(f);
    free(text);
}

/* The fp16 loss scaler's state (scale, growth tracker, factors) survives exactly; a state without
 * one says so; a state written without the key (older sd-train) loads; malformed values are
 * SD_EFORMAT. */
static void test_scaler_state(void)
{
    rig a, b;
    T_EQ_INT(rig_make(&a, 4), 0);
    rig_train(&a, 2);
    T_EQ_INT(rig_make(&b, 4), 0);
    const char *dir = t_path("scaler-state");
    double lw = 0.5;
    sd_loss_scaler sc;
    sd_loss_scaler_init(&sc, 1);
    sc.scale = 12345.6787f;   /* not a power of two: the float must survive the text */
    sc.growth_factor = 1.5;
    sc.backoff_factor = 0.1;
    sc.growth_interval = 7;
    sc.growth_tracker = 5;
    sd_train_state_in in = { { 4, 1, 2, 3, 9 }, &a.reg, &a.opt, opts_json, &lw, 1, 0.5, &sc, NULL };
    T_EQ_INT(sd_train_state_save(dir, &in), 0);
    sd_train_state_out o;
    T_EQ_INT(sd_train_state_load(dir, &b.reg, &b.opt, &o), 0);
    T_EQ_INT(o.prog.sched_step, 3);
    T_EQ_INT(o.has_scaler, 1);
    T_CHECK(o.scaler.enabled);
    T_CHECK(o.scaler.scale == sc.scale);
    T_CHECK(o.scaler.growth_factor == 1.5 && o.scaler.backoff_factor == 0.1);
    T_EQ_INT(o.scaler.growth_interval, 7);
    T_EQ_INT(o.scaler.growth_tracker, 5);
    sd_train_state_out_free(&o);
    /* extreme scales */
    static const float scales[3] = { 1.17549435e-38f, 3.40282347e+38f, 0.333333343f };
    for (int k = 0; k < 3; k++) {
        sc.scale = scales[k];
        T_EQ_INT(sd_train_state_save(dir, &in), 0);
        T_EQ_INT(sd_train_state_load(dir, &b.reg, &b.opt, &o), 0);
        T_CHECK(o.has_scaler && o.scaler.scale == scales[k]);
        sd_train_state_out_free(&o);
    }
    /* malformed values */
    sc.scale = 65536;
    static const char *const bad[][2] = {
        { "\"growth_tracker\":5", "\"growth_tracker\":7" },     /* not below the interval */
        { "\"growth_tracker\":5", "\"growth_tracker\":-1" },
        { "\"growth_tracker\":5", "\"growth_tracker\":1.5" },
        { "\"scale\":65536", "\"scale\":0" },
        { "\"scale\":65536", "\"scale\":1e300" },
        { "\"backoff_factor\":0.1", "\"backoff_factor\":1" },
        { "\"growth_factor\":1.5", "\"growth_factor\":1" },
        { "\"growth_interval\":7", "\"growth_interval\":0" },
        { "\"growth_interval\":7,", "" },
        { "\"grad_scaler\":{", "\"grad_scaler\":3,\"x\":{" },
    };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        T_EQ_INT(sd_train_state_save(dir, &in), 0);
        edit_state_json(dir, bad[k][0], bad[k][1]);
        T_EQ_INT(sd_train_state_load(dir, &b.reg, &b.opt, &o), SD_EFORMAT);
        T_CHECKF(strstr(sd_errmsg(), "grad_scaler") != NULL || strstr(sd_errmsg(), "loss") != NULL, "%zu: %s", k,
                 sd_errmsg());
    }
    /* no scaler: null, and a state without the key (older sd-train) */
    in.scaler = NULL;
    T_EQ_INT(sd_train_state_save(dir, &in), 0);
    T_EQ_INT(sd_train_state_load(dir, &b.reg, &b.opt, &o), 0);
    T_EQ_INT(o.has_scaler, 0);
    sd_train_state_out_free(&o);
    edit_state_json(dir, "\"grad_scaler\":null,", "");
    T_EQ_INT(sd_train_state_load(dir, &b.reg, &b.opt, &o), 0);
    T_EQ_INT(o.has_scaler, 0);
    sd_train_state_out_free(&o);
    /* a disabled scaler is not written */
    sd_loss_scaler off;
    sd_loss_scaler_init(&off, 0);
    in.scaler = &off;
    T_EQ_INT(sd_train_state_save(dir, &in), 0);
    T_EQ_INT(sd_train_state_load(dir, &b.reg, &b.opt, &o), 0);
    T_EQ_INT(o.has_scaler, 0);
    sd_train_state_out_free(&o);
    rig_free(&a);
    rig_free(&b);
}

static void corrupt(const char *path, long off, int truncate_to)
{
    FILE *f = fopen(path, "r+b");
    T_CHECK(f != NULL);
    if (!f) return;
    if (truncate_to >= 0) {
        T_EQ_INT(ftruncate(fileno(f), truncate_to), 0);
    } else {
        fseek(f, off, SEEK_END);
        int c = fgetc(f);
        fseek(f, off, SEEK_END);
        fputc(c ^ 0x40, f);
    }
    fclose(f);
}

static void test_errors(void)
{
    rig a, b;
    T_EQ_INT(rig_make(&a, 4), 0);
    rig_train(&a, 2);
    char dir[600], p[700];
    snprintf(dir, sizeof dir, "%s", t_path("bad-state"));
    sd_remove_tree(dir);   /* left by an earlier run in the same SD_TEST_TMP */
    sd_train_state_out o;
    /* not there */
    T_EQ_INT(rig_make(&b, 4), 0);
    T_EQ_INT(sd_train_state_load(dir, &b.reg, &b.opt, &o), SD_ENOTFOUND);
    /* a flipped bit in the weights */
    save_one(&a, dir, 2);
    snprintf(p, sizeof p, "%s/weights.safetensors", dir);
    corrupt(p, -3, -1);
    T_EQ_INT(sd_train_state_load(dir, &b.reg, &b.opt, &o), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "weights.safetensors is corrupted") != NULL);
    /* truncated optimizer file */
    save_one(&a, dir, 2);
    snprintf(p, sizeof p, "%s/optimizer.safetensors", dir);
    corrupt(p, 0, 100);
    T_EQ_INT(sd_train_state_load(dir, &b.reg, &b.opt, &o), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "optimizer.safetensors is corrupted") != NULL);
    /* truncated / broken state.json */
    save_one(&a, dir, 2);
    snprintf(p, sizeof p, "%s/state.json", dir);
    corrupt(p, 0, 20);
    T_EQ_INT(sd_train_state_load(dir, &b.reg, &b.opt, &o), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "state.json: not a valid state file") != NULL);
    /* missing state.json */
    unlink(p);
    T_EQ_INT(sd_train_state_load(dir, &b.reg, &b.opt, &o), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "not a state directory") != NULL);
    /* wrong version */
    save_one(&a, dir, 2);
    char *text;
    size_t n;
    T_EQ_INT(sd_read_file(p, 0, &text, &n), 0);
    char *v = strstr(text, "\"version\":1");
    T_CHECK(v != NULL);
    if (v) v[10] = '9';
    t_write_file(p, text, n);
    free(text);
    T_EQ_INT(sd_train_state_load(dir, &b.reg, &b.opt, &o), SD_EUNSUPPORTED);
    T_CHECK(strstr(sd_errmsg(), "state version 9") != NULL);
    rig_free(&b);
    /* a different rank */
    save_one(&a, dir, 2);
    T_EQ_INT(rig_make(&b, 8), 0);
    memset(b.reg.value_mem, 0, b.reg.value_bytes);
    T_EQ_INT(sd_train_state_load(dir, &b.reg, &b.opt, &o), SD_EINVAL);
    T_CHECK(strstr(sd_errmsg(), "it holds lora_unet_a.lora_down.weight as [4,6], this run has [8,6]") != NULL);
    int zero = 1;
    for (size_t i = 0; i < b.reg.value_bytes; i++) zero &= ((uint8_t *)b.reg.value_mem)[i] == 0;
    T_CHECK(zero);   /* nothing loaded */
    rig_free(&b);
    /* a network with fewer trained tensors */
    sd_params r1;
    sd_params_init(&r1);
    T_EQ_INT(sd_params_add(&r1, "lora_unet_a", "lora_down.weight", SD_DIMS(4, 6), SD_PARAM_TRAINABLE, NULL), 0);
    T_EQ_INT(sd_params_alloc(&r1, SD_DEV_CPU), 0);
    T_EQ_INT(sd_train_state_load(dir, &r1, NULL, &o), SD_EINVAL);
    T_CHECK(strstr(sd_errmsg(), "which this run does not train") != NULL);
    sd_params_free(&r1);
    /* a different number of optimizer groups */
    T_EQ_INT(rig_make(&b, 4), 0);
    sd_optim_free(&b.opt);
    sd_optim_config cfg;
    sd_optim_config_default(&cfg, SD_OPTIM_ADAMW);
    sd_param *all[3] = { b.p[0], b.p[1], b.p[2] };
    sd_optim_group_desc gd = { "unet", 1e-4, all, 3 };
    T_EQ_INT(sd_optim_init(&b.opt, &cfg, &gd, 1), 0);
    T_EQ_INT(sd_train_state_load(dir, &b.reg, &b.opt, &o), SD_EINVAL);
    T_CHECK(strstr(sd_errmsg(), "2 optimizer parameter groups, this run has 1") != NULL);
    rig_free(&b);
    /* options */
    static const char *const keys[] = { "network_module", "network_dim", "network_alpha", "conv_dim" };
    T_EQ_INT(sd_train_state_check_options(dir, opts_json, opts_json, keys, 4), 0);
    T_EQ_INT(sd_train_state_check_options(dir, opts_json,
                                          "{\"network_dim\":16,\"network_alpha\":1.0,\"network_module\":\"networks.lora\"}",
                                          keys, 4), SD_EINVAL);
    T_CHECK(strstr(sd_errmsg(), "it was saved with network_dim=4, this run has network_dim=16") != NULL);
    T_EQ_INT(sd_train_state_check_options(dir, opts_json, "{\"network_dim\":4,\"network_alpha\":1.0,"
                                          "\"network_module\":\"networks.lora\",\"conv_dim\":4}", keys, 4), SD_EINVAL);
    T_CHECK(strstr(sd_errmsg(), "conv_dim=(unset), this run has conv_dim=4") != NULL);
    /* bad options snapshot on save */
    double lw = 0;
    sd_train_state_in in = { { 1, 0, 0, 1, 1 }, &a.reg, &a.opt, "{not json", &lw, 0, 0, NULL, NULL };
    T_EQ_INT(sd_train_state_save(t_path("bad2-state"), &in), SD_EINVAL);
    struct stat st;
    T_CHECK(stat(t_path("bad2-state"), &st) != 0);
    rig_free(&a);
}

static void test_names_retention(void)
{
    char b[128];
    T_EQ_INT(sd_save_name(b, sizeof b, SD_SAVE_EPOCH, "tiny", 3, ".safetensors"), 0);
    T_EQ_STR(b, "tiny-000003.safetensors");
    T_EQ_INT(sd_save_name(b, sizeof b, SD_SAVE_STEP, NULL, 500, ".safetensors"), 0);
    T_EQ_STR(b, "at-step00000500.safetensors");
    T_EQ_INT(sd_save_name(b, sizeof b, SD_SAVE_LAST, NULL, 0, ".safetensors"), 0);
    T_EQ_STR(b, "last.safetensors");
    T_EQ_INT(sd_save_name(b, sizeof b, SD_SAVE_EPOCH, NULL, 12, NULL), 0);
    T_EQ_STR(b, "epoch-000012-state");
    T_EQ_INT(sd_save_name(b, sizeof b, SD_SAVE_STEP, "tiny", 20, NULL), 0);
    T_EQ_STR(b, "tiny-step00000020-state");
    T_EQ_INT(sd_save_name(b, sizeof b, SD_SAVE_LAST, "tiny", 0, NULL), 0);
    T_EQ_STR(b, "tiny-state");
    T_EQ_INT(sd_save_name(b, 8, SD_SAVE_LAST, "tiny", 0, NULL), SD_ERANGE);
    T_EQ_INT(sd_should_save_epoch(2, 2, 10), 1);
    T_EQ_INT(sd_should_save_epoch(3, 2, 10), 0);
    T_EQ_INT(sd_should_save_epoch(10, 2, 10), 0);   /* the last epoch is the final save */
    T_EQ_INT(sd_should_save_epoch(2, 0, 10), 0);
    T_EQ_INT(sd_should_save_step(30, 10), 1);
    T_EQ_INT(sd_should_save_step(31, 10), 0);
    T_EQ_INT(sd_should_save_step(30, 0), 0);
    /* retention: values worked out from train_util.get_remove_*_no / save_and_remove_state_* */
    T_EQ_INT(sd_remove_epoch_no(5, 1, 2, 0), 3);
    T_EQ_INT(sd_remove_epoch_no(6, 2, 2, 0), 2);
    T_EQ_INT(sd_remove_epoch_no(2, 2, 2, 0), -1);
    T_EQ_INT(sd_remove_epoch_no(4, 2, 2, 1), 0);
    T_EQ_INT(sd_remove_epoch_no(4, 2, 0, 0), -1);
    T_EQ_INT(sd_remove_step_no(30, 10, 2, 0), 20);   /* r = 27 → 20 */
    T_EQ_INT(sd_remove_step_no(30, 10, 15, 0), 10);  /* r = 14 → 10 */
    T_EQ_INT(sd_remove_step_no(5, 10, 2, 0), 0);     /* r = 2 → 0: checkpoint "step 0" (≥ 0) */
    T_EQ_INT(sd_remove_step_no(5, 10, 2, 1), -1);    /* states need r > 0 */
    T_EQ_INT(sd_remove_step_no(4, 4, 6, 0), -1);     /* r = -3, Python floor mod → -4 */
    T_EQ_INT(sd_remove_step_no(100, 25, 50, 1), 25); /* r = 49 → 25 */
    /* pruning a run's states */
    const char *out = t_path("prune");
    mkdir(out, 0755);
    char d[700];
    for (int s = 10; s <= 50; s += 10) {
        snprintf(d, sizeof d, "%s/tiny-step%08d-state", out, s);
        mkdir(d, 0755);
        snprintf(d, sizeof d, "%s/tiny-step%08d-state/x", out, s);
        t_write_file(d, "x", 1);
        int64_t r = sd_remove_step_no(s, 10, 25, 1);
        if (r > 0) {
            snprintf(d, sizeof d, "%s/tiny-step%08lld-state", out, (long long)r);
            T_EQ_INT(sd_remove_tree(d), 0);
        }
    }
    T_EQ_INT(count_entries(out), 3);   /* 30, 40, 50 remain: the last 25 steps plus one */
    snprintf(d, sizeof d, "%s/tiny-step%08d-state", out, 20);
    struct stat st;
    T_CHECK(stat(d, &st) != 0);
    T_EQ_INT(sd_remove_tree(d), 0);    /* absent: fine */
    /* the combined helper: checkpoints (ext) and states, state retention falling back */
    const char *o2 = t_path("prune2");
    mkdir(o2, 0755);
    for (int e = 1; e <= 4; e++) {
        snprintf(d, sizeof d, "%s/tiny-%06d.safetensors", o2, e);
        t_write_file(d, "x", 1);
        snprintf(d, sizeof d, "%s/tiny-%06d-state", o2, e);
        mkdir(d, 0755);
        int64_t r1, r2;
        T_EQ_INT(sd_prune_after_save(o2, "tiny", SD_SAVE_EPOCH, e, 1, 2, 0, ".safetensors", &r1), 0);
        T_EQ_INT(sd_prune_after_save(o2, "tiny", SD_SAVE_EPOCH, e, 1, 2, 1, NULL, &r2), 0);
        T_EQ_INT(r1, e - 2 >= 0 ? e - 2 : -1);
        T_EQ_INT(r2, e - 1);
    }
    /* left: checkpoints 3, 4 (last 2) and state 4 (last 1) */
    T_EQ_INT(count_entries(o2), 3);
    snprintf(d, sizeof d, "%s/tiny-000004-state", o2);
    T_CHECK(stat(d, &st) == 0);
    snprintf(d, sizeof d, "%s/tiny-000003.safetensors", o2);
    T_CHECK(stat(d, &st) == 0);
}

int main(void)
{
    T_RUN(test_roundtrip);
    T_RUN(test_errors);
    T_RUN(test_scaler_state);
    T_RUN(test_names_retention);
    T_DONE();
}
