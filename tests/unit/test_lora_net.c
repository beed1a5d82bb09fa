/* lib/train/lora_net against networks/lora.py's own functions (tests/data/train/lora_net.txt,
 * made by make_lora_net_golden.py, which executes them): block indices, network_args → block LR
 * weights and block dims/alphas, optimizer parameter groups (LoRA+, block LR), max-norm. */
#include <math.h>

#include "base/error.h"
#include "test.h"
#include "train/lora_lbw.h"
#include "train/lora_net.h"
#include "train_golden.h"

static char *g_text;

/* the line starting with `prefix` (NULL if none); returns a pointer after the prefix */
static const char *line_after(const char *prefix)
{
    size_t L = strlen(prefix);
    for (const char *p = g_text; p && *p;) {
        if (!strncmp(p, prefix, L)) return p + L;
        p = strchr(p, '\n');
        if (p) p++;
    }
    return NULL;
}

static int read_nums(const char *p, double *v, int max)
{
    int n = 0;
    if (!p || (p[0] == '-' && (p[1] == '\n' || !p[1]))) return 0;
    while (n < max) {
        char *e;
        double x = strtod(p, &e);
        if (e == p) break;
        v[n++] = x;
        p = e;
        if (*p == '\n' || !*p) break;
    }
    return n;
}

static void test_block_index(void)
{
    int n = 0;
    for (const char *p = g_text; p && *p;) {
        if (!strncmp(p, "blockidx ", 9)) {
            int sdxl, idx;
            char name[256];
            T_EQ_INT(sscanf(p + 9, "%d %255s %d", &sdxl, name, &idx), 3);
            T_CHECKF(sd_lora_block_index(name, sdxl) == idx, "%s: %d vs %d", name, sd_lora_block_index(name, sdxl), idx);
            n++;
        }
        p = strchr(p, '\n');
        if (p) p++;
    }
    T_EQ_INT(n, 15);
}

static void test_args(void)
{
    for (int ci = 0; ci < 6; ci++) {
        char pre[32];
        snprintf(pre, sizeof pre, "argset %d ", ci);
        const char *p = line_after(pre);
        T_CHECK(p != NULL);
        if (!p) continue;
        int sdxl = *p == '1';
        p += 2;
        char buf[1024];
        size_t L = strcspn(p, "\n");
        snprintf(buf, sizeof buf, "%.*s", (int)L, p);
        const char *items[16];
        int n = 0;
        for (char *t = strtok(buf, " "); t && n < 16; t = strtok(NULL, " ")) items[n++] = t;
        sd_lora_net_args a;
        T_EQ_INT(sd_lora_net_args_parse(&a, sdxl, 4, 1.0, items, n), 0);
        double v[32];
        snprintf(pre, sizeof pre, "lrw %d ", ci);
        int m = read_nums(line_after(pre), v, 32);
        T_EQ_INT(a.has_lr_weight, m > 0);
        for (int i = 0; i < m; i++) T_CHECKF(a.lr_weight[i] == v[i], "case %d lrw[%d] %.17g vs %.17g", ci, i, a.lr_weight[i], v[i]);
        if (m) T_EQ_INT(m, a.nblocks);
        snprintf(pre, sizeof pre, "bd %d ", ci);
        m = read_nums(line_after(pre), v, 32);
        T_EQ_INT(a.use_blocks, m > 0);
        for (int i = 0; i < m; i++) T_CHECKF(a.block_dims[i] == (int)v[i], "case %d bd[%d]", ci, i);
        snprintf(pre, sizeof pre, "ba %d ", ci);
        m = read_nums(line_after(pre), v, 32);
        for (int i = 0; i < m; i++) T_CHECKF(a.block_alphas[i] == v[i], "case %d ba[%d]", ci, i);
        snprintf(pre, sizeof pre, "cbd %d ", ci);
        m = read_nums(line_after(pre), v, 32);
        T_EQ_INT(a.has_conv_blocks, m > 0);
        for (int i = 0; i < m; i++) T_CHECKF(a.conv_block_dims[i] == (int)v[i], "case %d cbd[%d]", ci, i);
        snprintf(pre, sizeof pre, "cba %d ", ci);
        m = read_nums(line_after(pre), v, 32);
        for (int i = 0; i < m; i++) T_CHECKF(a.conv_block_alphas[i] == v[i], "case %d cba[%d]", ci, i);
    }
    /* errors and odd inputs */
    sd_lora_net_args a;
    const char *bad1[] = { "block_dims=1,2,3" };
    T_EQ_INT(sd_lora_net_args_parse(&a, 0, 4, 1.0, bad1, 1), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "block_dims must have 25 elements but 3 elements are given") != NULL);
    const char *bad2[] = { "up_lr_weight=0.5" };
    T_EQ_INT(sd_lora_net_args_parse(&a, 0, 4, 1.0, bad2, 1), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "unknown lr_weight preset") != NULL);
    const char *bad3[] = { "conv_dim=4.0" };
    T_EQ_INT(sd_lora_net_args_parse(&a, 0, 4, 1.0, bad3, 1), SD_EUSAGE);
    const char *bad4[] = { "rank_dropout=1.5" };
    T_EQ_INT(sd_lora_net_args_parse(&a, 0, 4, 1.0, bad4, 1), SD_EUSAGE);
    const char *bad5[] = { "conv_dim" };
    T_EQ_INT(sd_lora_net_args_parse(&a, 0, 4, 1.0, bad5, 1), SD_EUSAGE);
    const char *ok[] = { "conv_dim=8", "algo=loha", "dropout=0.1", "module_dropout=0.1", "conv_dim=4" };
    T_EQ_INT(sd_lora_net_args_parse(&a, 0, 0, NAN, ok, 5), 0);
    T_EQ_INT(a.network_dim, 4);
    T_NEAR(a.network_alpha, 1.0, 0);
    T_EQ_INT(a.conv_dim, 4);              /* a dict: the last value wins */
    T_NEAR(a.conv_alpha, 1.0, 0);
    T_NEAR(a.module_dropout, 0.1, 0);
    T_EQ_INT(a.nunknown, 1);
    T_EQ_STR(a.unknown[0], "algo");
    /* planning */
    int dim;
    double alpha;
    T_EQ_INT(sd_lora_net_plan(&a, "lora_unet_down_blocks_0_resnets_0_conv1", SD_LORA_TARGET_RESBLOCK, 1, NULL, &dim, &alpha), 1);
    T_EQ_INT(dim, 4);
    T_EQ_INT(sd_lora_net_plan(&a, "lora_unet_down_blocks_0_resnets_0_time_emb_proj", SD_LORA_TARGET_RESBLOCK, 0, NULL, &dim, &alpha), 1);
    T_EQ_INT(dim, 4);
    sd_lora_net_args plain;
    T_EQ_INT(sd_lora_net_args_parse(&plain, 0, 16, 8, NULL, 0), 0);
    T_EQ_INT(sd_lora_net_plan(&plain, "lora_unet_down_blocks_0_resnets_0_conv1", SD_LORA_TARGET_RESBLOCK, 1, NULL, &dim, &alpha), 0);
    T_EQ_INT(sd_lora_net_plan(&plain, "lora_unet_down_blocks_0_attentions_0_proj_in", SD_LORA_TARGET_TRANSFORMER, 0, NULL, &dim, &alpha), 1);
    T_EQ_INT(dim, 16);
    T_NEAR(alpha, 8, 0);
    T_EQ_INT(sd_lora_net_plan(&plain, "lora_te_text_model_encoder_layers_0_mlp_fc1", SD_LORA_TARGET_TE, 0, NULL, &dim, &alpha), 1);
    /* block LR 0 → no modules in that block; TE unaffected */
    const char *z[] = { "down_lr_weight=0,0,1,1,1,1,1,1,1,1,1,1" };
    T_EQ_INT(sd_lora_net_args_parse(&a, 0, 8, 4, z, 1), 0);
    T_EQ_INT(sd_lora_net_plan(&a, "lora_unet_down_blocks_0_attentions_0_proj_in", SD_LORA_TARGET_TRANSFORMER, 0, NULL, &dim, &alpha), 0);
    T_EQ_INT(sd_lora_net_plan(&a, "lora_unet_down_blocks_0_attentions_1_proj_in", SD_LORA_TARGET_TRANSFORMER, 0, NULL, &dim, &alpha), 1);
    T_EQ_INT(dim, 8);
    T_EQ_INT(sd_lora_net_plan(&a, "lora_te_text_model_encoder_layers_0_mlp_fc1", SD_LORA_TARGET_TE, 0, NULL, &dim, &alpha), 1);
    /* from a file */
    sd_lora_file_module fm[2] = { { "lora_unet_a", 3, 4, 5, 1, 1, 0, 1.5f, 1, 0 }, { "lora_unet_b", 2, 4, 5, 3, 3, 1, 2.0f, 1, 0 } };
    sd_lora_file_info fi = { fm, 2 };
    T_EQ_INT(sd_lora_net_plan(&plain, "lora_unet_b", SD_LORA_TARGET_RESBLOCK, 1, &fi, &dim, &alpha), 1);
    T_EQ_INT(dim, 2);
    T_NEAR(alpha, 2.0, 0);
    T_EQ_INT(sd_lora_net_plan(&plain, "lora_unet_c", SD_LORA_TARGET_TRANSFORMER, 0, &fi, &dim, &alpha), 0);
}

/* ---- groups ---------------------------------------------------------------------------------------- */

typedef struct gnet {
    sd_params reg;
    sd_lora l[6];
    sd_lora_ref ref[6];
    int is_te[6];
} gnet;

static const char *const gnames[6] = {
    "lora_te_text_model_encoder_layers_0_mlp_fc1", "lora_unet_down_blocks_0_attentions_0_proj_in",
    "lora_unet_up_blocks_3_attentions_2_proj_out", "lora_unet_down_blocks_0_attentions_1_proj_in",
    "lora_unet_mid_block_attentions_0_proj_out", "lora_unet_down_blocks_1_attentions_0_proj_in" };

/* six modules under gnames (the first a text-encoder one), allocated on the host */
static void gnet_init(gnet *g)
{
    sd_params_init(&g->reg);
    for (int i = 0; i < 6; i++) {
        T_EQ_INT(sd_lora_init(&g->l[i], &g->reg, gnames[i], i ? 4 : 6, i ? 3 : 5, 2, 1, 0, 1, 1, sd_conv2d_geom_make(1, 0), 0), 0);
        g->ref[i].name = gnames[i];
        g->ref[i].lora = &g->l[i];
        g->is_te[i] = i == 0;
    }
    T_EQ_INT(sd_params_alloc(&g->reg, SD_DEV_CPU), 0);
}

static void gnet_free(gnet *g)
{
    for (int i = 0; i < 6; i++) sd_lora_free(&g->l[i]);
    sd_params_free(&g->reg);
}

static void test_groups(void)
{
    gnet g;
    gnet_init(&g);
    static const struct { const char *name, *args; double tlr, ulr, dlr; } cases[6] = {
        { "plain", NULL, NAN, NAN, 1e-4 },
        { "lrs", NULL, 5e-5, 2e-4, 1e-4 },
        { "te0", NULL, 0.0, NAN, 1e-4 },
        { "plus", "loraplus_lr_ratio=16", NAN, NAN, 1e-4 },
        { "plus_split", "loraplus_unet_lr_ratio=4 loraplus_text_encoder_lr_ratio=2", 3e-5, NAN, 1e-4 },
        { "blocks", "down_lr_weight=sine loraplus_unet_lr_ratio=8", NAN, 1e-3, 1e-4 },
    };
    for (int c = 0; c < 6; c++) {
        char buf[256];
        const char *items[4];
        int n = 0;
        if (cases[c].args) {
            snprintf(buf, sizeof buf, "%s", cases[c].args);
            for (char *t = strtok(buf, " "); t; t = strtok(NULL, " ")) items[n++] = t;
        }
        sd_lora_net_args a;
        T_EQ_INT(sd_lora_net_args_parse(&a, 0, 2, 1, items, n), 0);
        sd_lora_groups G;
        T_EQ_INT(sd_lora_param_groups(&a, g.ref, g.is_te, 6, cases[c].tlr, cases[c].ulr, cases[c].dlr, &G), 0);
        char pre[64];
        snprintf(pre, sizeof pre, "groups %s ", cases[c].name);
        const char *p = line_after(pre);
        T_CHECK(p != NULL);
        if (!p) continue;
        T_EQ_INT(G.n, atoi(p));
        /* the group lines of this case, in order */
        snprintf(pre, sizeof pre, "group %s|", cases[c].name);
        int k = 0;
        for (const char *q = g_text; q && *q;) {
            if (!strncmp(q, pre, strlen(pre)) && k < G.n) {
                const char *d = q + strlen(pre);
                const char *bar = strchr(d, '|');
                char desc[64], lrx[64], plist[2048];
                snprintf(desc, sizeof desc, "%.*s", (int)(bar - d), d);
                const char *bar2 = strchr(bar + 1, '|');
                snprintf(lrx, sizeof lrx, "%.*s", (int)(bar2 - bar - 1), bar + 1);
                snprintf(plist, sizeof plist, "%.*s", (int)strcspn(bar2 + 1, "\n"), bar2 + 1);
                T_EQ_STR(G.desc[k].name, desc);
                T_CHECKF(G.desc[k].lr == strtod(lrx, NULL), "%s group %d lr %.17g vs %s", cases[c].name, k, G.desc[k].lr, lrx);
                char mine[2048] = "";
                size_t L = 0;
                for (size_t j = 0; j < G.desc[k].count; j++)
                    L += (size_t)snprintf(mine + L, sizeof mine - L, "%s%s", j ? "," : "", G.desc[k].params[j]->key);
                T_EQ_STR(mine, plist);
                k++;
            }
            q = strchr(q, '\n');
            if (q) q++;
        }
        T_EQ_INT(k, G.n);
        sd_lora_groups_free(&G);
    }
    gnet_free(&g);
}

/* LoRA-FA (networks/lora_fa.py prepare_optimizer_params): lora_up only; TE and UNet groups kept at LR 0,
 * block groups at LR 0 dropped; names as train_network.py gives a network without lr_descriptions */
static void test_groups_fa(void)
{
    gnet g;
    gnet_init(&g);
    sd_lora_net_args a;
    sd_lora_groups G;
    T_EQ_INT(sd_lora_net_args_parse(&a, 0, 2, 1, NULL, 0), 0);
    /* plain: [TE ups] at default, [UNet ups] at unet_lr; two groups → both named "unet" */
    T_EQ_INT(sd_lora_param_groups_fa(&a, g.ref, g.is_te, 6, NAN, 2e-4, 1e-4, 0, &G), 0);
    T_EQ_INT(G.n, 2);
    T_EQ_INT((int)G.desc[0].count, 1);
    T_EQ_INT((int)G.desc[1].count, 5);
    T_CHECK(G.desc[0].params[0] == g.l[0].up);
    for (int j = 0; j < 5; j++) T_CHECK(G.desc[1].params[j] == g.l[j + 1].up);
    T_NEAR(G.desc[0].lr, 1e-4, 0);
    T_NEAR(G.desc[1].lr, 2e-4, 0);
    T_EQ_STR(G.desc[0].name, "unet");
    T_EQ_STR(G.desc[1].name, "unet");
    T_EQ_INT(G.te_named_apart, 1);
    sd_lora_groups_free(&G);
    /* text_encoder_lr 0: the group stays (lr 0) */
    T_EQ_INT(sd_lora_param_groups_fa(&a, g.ref, g.is_te, 6, 0.0, 0.0, 1e-4, 0, &G), 0);
    T_EQ_INT(G.n, 2);
    T_NEAR(G.desc[0].lr, 0.0, 0);
    T_NEAR(G.desc[1].lr, 0.0, 0);
    sd_lora_groups_free(&G);
    /* block LR weights: one group per block in order of first appearance, LR 0 blocks dropped. The reference's
       block index picks the weight (lora.py's lr_weight[idx] = lora_fa.py's down_lr_weight[idx] for idx < 12,
       so the first down value belongs to no module): down_blocks_0_attentions_0 (block 1: 0.5),
       up_blocks_3_attentions_2 (block 24: up[11] = 3), down_blocks_0_attentions_1 (block 2: 0, dropped),
       mid (12: 1), down_blocks_1_attentions_0 (block 4: 0.25) */
    const char *bl[] = { "down_lr_weight=7,0.5,0,1,0.25,1,1,1,1,1,1,1", "up_lr_weight=1,1,1,1,1,1,1,1,1,1,1,3" };
    T_EQ_INT(sd_lora_net_args_parse(&a, 0, 2, 1, bl, 2), 0);
    T_EQ_INT(sd_lora_param_groups_fa(&a, g.ref, g.is_te, 6, NAN, 1e-3, 1e-4, 0, &G), 0);
    T_EQ_INT(G.n, 5);
    static const double lr[5] = { 1e-4, 5e-4, 3e-3, 1e-3, 2.5e-4 };
    static const int who[5] = { 0, 1, 2, 4, 5 };
    for (int k = 0; k < 5 && k < G.n; k++) {
        char nm[16];
        snprintf(nm, sizeof nm, "group%d", k + 1);
        T_EQ_STR(G.desc[k].name, nm);
        T_CHECKF(fabs(G.desc[k].lr - lr[k]) <= 1e-15 * lr[k], "group %d lr %.17g", k, G.desc[k].lr);
        T_EQ_INT((int)G.desc[k].count, 1);
        T_CHECK(G.desc[k].params[0] == g.l[who[k]].up);
    }
    sd_lora_groups_free(&G);
    /* --network_train_unet_only naming: from group0 */
    T_EQ_INT(sd_lora_param_groups_fa(&a, g.ref + 1, g.is_te + 1, 5, NAN, 1e-3, 1e-4, 1, &G), 0);
    T_EQ_INT(G.n, 4);
    T_EQ_STR(G.desc[0].name, "group0");
    T_EQ_INT(G.te_named_apart, 0);
    sd_lora_groups_free(&G);
    /* refusals */
    const char *r1[] = { "loraplus_lr_ratio=4" }, *r2[] = { "block_dims=1,2" }, *r3[] = { "mid_lr_weight=1,2" };
    T_EQ_INT(sd_lora_fa_check_args(0, r1, 1), SD_EUSAGE);
    T_EQ_INT(sd_lora_fa_check_args(1, r2, 1), SD_EUSAGE);
    T_EQ_INT(sd_lora_fa_check_args(0, r2, 1), 0);
    T_EQ_INT(sd_lora_fa_check_args(0, r3, 1), SD_EUSAGE);
    gnet_free(&g);
}

/* svd_merge_lora.py get_lbw_block_index / format_lbws (hand-worked from the reference's code) */
static void test_lbw(void)
{
    static const struct { const char *name; int sdxl, idx; } c[] = {
        { "lora_te_text_model_encoder_layers_0_mlp_fc1", 0, 0 },
        { "lora_te2_text_model_encoder_layers_3_self_attn_q_proj", 1, 0 },
        { "lora_unet_down_blocks_0_resnets_0_conv1", 0, 2 },
        { "lora_unet_down_blocks_2_attentions_1_proj_in", 0, 9 },
        { "lora_unet_down_blocks_2_downsamplers_0_conv", 0, 10 },
        { "lora_unet_down_blocks_3_resnets_1_conv2", 0, 12 },
        { "lora_unet_mid_block_attentions_0_proj_out", 0, 13 },
        { "lora_unet_up_blocks_0_resnets_2_conv1", 0, 16 },
        { "lora_unet_up_blocks_0_upsamplers_0_conv", 0, 16 },
        { "lora_unet_up_blocks_3_attentions_2_proj_out", 0, 25 },
        { "lora_unet_up_blocks_1_downsamplers_0_conv", 0, -1 },
        { "lora_unet_input_blocks_4_1_proj_in", 0, -1 },
        { "lora_unet_input_blocks_4_1_proj_in", 1, 5 },
        { "lora_unet_input_blocks_10_0_op", 1, 11 },
        { "lora_unet_middle_block_1_proj_in", 1, 13 },
        { "lora_unet_output_blocks_8_0_skip_connection", 1, 22 },
        { "lora_unet_time_embed_0", 1, 1 },
        { "lora_unet_out_2", 1, 23 },
        { "lora_unet_down_blocks_0_resnets_0_conv1", 1, -1 },
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++)
        T_CHECKF(sd_lora_lbw_block_index(c[i].name, c[i].sdxl) == c[i].idx, "%s sdxl %d: %d vs %d", c[i].name, c[i].sdxl,
                 sd_lora_lbw_block_index(c[i].name, c[i].sdxl), c[i].idx);
    sd_lora_lbws l;
    const char *s17[] = { "[2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18]" };
    T_EQ_INT(sd_lora_lbws_parse(&l, s17, 1), 0);
    T_EQ_INT(l.sdxl_names, 0);
    T_NEAR(sd_lora_lbw_weight(&l, 0, "lora_te_text_model_encoder_layers_0_mlp_fc1", 0), 2, 0);       /* BASE */
    T_NEAR(sd_lora_lbw_weight(&l, 0, "lora_unet_down_blocks_0_resnets_0_conv1", 0), 3, 0);           /* IN01 */
    T_NEAR(sd_lora_lbw_weight(&l, 0, "lora_unet_down_blocks_0_downsamplers_0_conv", 0), 1, 0);       /* IN03: not in 17 */
    T_NEAR(sd_lora_lbw_weight(&l, 0, "lora_unet_mid_block_attentions_0_proj_out", 0), 9, 0);         /* MID */
    T_NEAR(sd_lora_lbw_weight(&l, 0, "lora_unet_up_blocks_1_attentions_0_proj_out", 0), 10, 0);      /* OUT03 */
    sd_lora_lbws_free(&l);
    const char *s12[] = { "[true,false,1,1,1,1,1,1,1,1,1,1.5]", "[1,1,1,1,1,1,1,1,1,1,1,1]" };
    T_EQ_INT(sd_lora_lbws_parse(&l, s12, 2), 0);
    T_EQ_INT(l.sdxl_names, 1);
    T_NEAR(sd_lora_lbw_weight(&l, 0, "lora_te1_text_model_encoder_layers_0_mlp_fc1", 1), 1, 0);
    T_NEAR(sd_lora_lbw_weight(&l, 0, "lora_unet_input_blocks_4_1_proj_in", 1), 0, 0);                /* IN04 */
    T_NEAR(sd_lora_lbw_weight(&l, 0, "lora_unet_input_blocks_5_1_proj_in", 1), 1, 0);                /* IN05 */
    T_NEAR(sd_lora_lbw_weight(&l, 0, "lora_unet_input_blocks_3_0_op", 1), 1, 0);                     /* IN02: not in 12 */
    T_NEAR(sd_lora_lbw_weight(&l, 0, "lora_unet_output_blocks_5_1_proj_in", 1), 1.5, 0);             /* OUT05 */
    T_NEAR(sd_lora_lbw_weight(&l, 1, "lora_unet_output_blocks_5_1_proj_in", 1), 1, 0);
    sd_lora_lbws_free(&l);
    const char *bad[][2] = { { "[1,2]", NULL }, { "[1,1,1,1,1,1,1,1,1,1,1,\"x\"]", NULL }, { "1", NULL },
                             { "[1,1,1,1,1,1,1,1,1,1,1,1]", "[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]" }, { "[1,", NULL } };
    for (int i = 0; i < 5; i++) {
        T_EQ_INT(sd_lora_lbws_parse(&l, bad[i], bad[i][1] ? 2 : 1), SD_EUSAGE);
        T_CHECK(l.w == NULL);
    }
}

/* ---- max norm ------------------------------------------------------------------------------------ */

static void fill(const char *tag, const char *name, sd_param *p)
{
    char pre[128];
    snprintf(pre, sizeof pre, "%s %s ", tag, name);
    double v[256];
    int n = read_nums(line_after(pre), v, 256);
    T_EQ_INT(n, sd_tensor_numel(&p->value));
    for (int i = 0; i < n; i++) ((float *)p->value.data)[i] = (float)v[i];
}

static double worst(const char *tag, const char *name, const sd_param *p)
{
    char pre[128];
    snprintf(pre, sizeof pre, "%s %s ", tag, name);
    double v[256], w = 0;
    int n = read_nums(line_after(pre), v, 256);
    T_EQ_INT(n, sd_tensor_numel(&p->value));
    for (int i = 0; i < n; i++) {
        double d = fabs(((float *)p->value.data)[i] - v[i]) / fmax(fabs(v[i]), 1e-6);
        if (d > w) w = d;
    }
    return w;
}

static void test_max_norm(void)
{
    sd_params reg;
    sd_params_init(&reg);
    sd_lora l[4];
    static const char *const names[4] = { "lora_unet_a", "lora_unet_b", "lora_unet_c", "lora_te_d" };
    T_EQ_INT(sd_lora_init(&l[0], &reg, names[0], 6, 5, 4, 2.0f, 0, 1, 1, sd_conv2d_geom_make(1, 0), 0), 0);
    T_EQ_INT(sd_lora_init(&l[1], &reg, names[1], 3, 4, 2, 1.0f, 1, 3, 3, sd_conv2d_geom_make(1, 1), 0), 0);
    T_EQ_INT(sd_lora_init(&l[2], &reg, names[2], 5, 2, 3, 3.0f, 0, 1, 1, sd_conv2d_geom_make(1, 0), 1), 0);
    T_EQ_INT(sd_lora_init(&l[3], &reg, names[3], 4, 2, 2, 0.01f, 0, 1, 1, sd_conv2d_geom_make(1, 0), 0), 0);
    T_EQ_INT(sd_params_alloc(&reg, SD_DEV_CPU), 0);
    sd_lora_ref refs[4];
    for (int i = 0; i < 4; i++) {
        refs[i].name = names[i];
        refs[i].lora = &l[i];
        fill("mninit", names[i], l[i].down);
        fill("mninitup", names[i], l[i].up);
    }
    sd_ctx ctx;
    T_EQ_INT(sd_ctx_init(&ctx, SD_DEV_CPU, 1, 0), 0);
    int ks;
    double mean, mx;
    T_EQ_INT(sd_lora_max_norm(&ctx, refs, 4, 1.0, &ks, &mean, &mx), 0);
    const char *p = line_after("maxnorm ");
    T_CHECK(p != NULL);
    if (p) {
        int eks = atoi(p);
        char *e;
        strtol(p, &e, 10);
        double emean = strtod(e, &e), emx = strtod(e, &e);
        T_EQ_INT(ks, eks);
        T_NEAR(mean, emean, 1e-6 * emean);
        T_NEAR(mx, emx, 1e-6 * emx);
    }
    double w = 0;
    for (int i = 0; i < 4; i++) {
        w = fmax(w, worst("mndown", names[i], l[i].down));
        w = fmax(w, worst("mnup", names[i], l[i].up));
    }
    T_CHECKF(w <= 1e-6, "worst rel %.3g", w);
    printf("# max-norm vs apply_max_norm_regularization: %d keys scaled, worst relative difference %.3g\n", ks, w);
    sd_ctx_free(&ctx);
    for (int i = 0; i < 4; i++) sd_lora_free(&l[i]);
    sd_params_free(&reg);
}

int main(void)
{
    tg_file g = { 0 };
    if (tg_open(&g, "lora_net.txt")) {
        printf("not ok open_golden\n");
        return 1;
    }
    g_text = g.text;
    T_RUN(test_block_index);
    T_RUN(test_args);
    T_RUN(test_groups);
    T_RUN(test_groups_fa);
    T_RUN(test_lbw);
    T_RUN(test_max_norm);
    tg_close(&g);
    T_DONE();
}
