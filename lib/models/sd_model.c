/* Whole SD1.x / SD2.x / SDXL models from single files, ckpt files and Diffusers folders (sd_model.h). */
#include "models/sd_model.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "base/fileio.h"
#include "base/hash.h"
#include "io/ckpt.h"
#include "io/jsonl.h"

const char *sd_model_format_name(sd_model_format f)
{
    switch (f) {
    case SD_MODEL_FMT_SAFETENSORS: return "safetensors";
    case SD_MODEL_FMT_CKPT: return "ckpt";
    case SD_MODEL_FMT_DIFFUSERS: return "diffusers";
    }
    return "?";
}

typedef struct pool_node pool_node;
static void pools_free(pool_node *p);

/* ---- one weight file ------------------------------------------------------------------------- */

/* Stream a ckpt view (non-contiguous tensor) densely. */
typedef struct ckpt_view {
    const sd_ckpt *ck;
    const sd_ckpt_tensor *t;
} ckpt_view;

static int write_ckpt_view(void *ctx, const char *name, sd_st_sink *sink)
{
    (void)name;
    const ckpt_view *v = ctx;
    void *buf = malloc(v->t->nbytes ? v->t->nbytes : 1);
    if (!buf) return sd_err(SD_ENOMEM, "out of memory (%llu bytes)", (unsigned long long)v->t->nbytes);
    int rc = sd_ckpt_read(v->ck, v->t, v->t->dtype, buf, (size_t)v->t->numel);
    if (!rc) rc = sd_st_sink_write(sink, buf, v->t->nbytes);
    free(buf);
    return rc;
}

/* ckpt → safetensors image in an unlinked temporary file, mapped read-only. */
static int ckpt_convert(const char *path, sd_model_file *f)
{
    sd_ckpt *ck = NULL;
    int rc = sd_ckpt_open(path, &ck);
    if (rc) return rc;
    size_t n = sd_ckpt_count(ck);
    ckpt_view *views = calloc(n + 1, sizeof *views);
    sd_safetensors_writer *w = NULL;
    FILE *fp = NULL;
    if (!views) rc = sd_err(SD_ENOMEM, "out of memory");
    if (!rc) rc = sd_safetensors_writer_new(&w);
    for (size_t i = 0; i < n && !rc; i++) {
        const sd_ckpt_tensor *t = sd_ckpt_at(ck, i);
        if (t->contiguous || t->numel == 0) {
            rc = sd_safetensors_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->numel ? t->data : NULL);
        } else {
            views[i].ck = ck;
            views[i].t = t;
            rc = sd_safetensors_writer_add_fn(w, t->name, t->dtype, t->ndim, t->shape, write_ckpt_view, &views[i]);
        }
        if (rc) sd_err_prefix(rc, "%s", path);
    }
    for (size_t i = 0; i < sd_ckpt_meta_count(ck) && !rc; i++) {
        const char *k, *v;
        sd_ckpt_meta_at(ck, i, &k, &v);
        rc = sd_safetensors_writer_set_meta(w, k, v);
    }
    int fd = -1;
    if (!rc) {
        const char *tmp = getenv("TMPDIR");
        char tpl[4096];
        snprintf(tpl, sizeof tpl, "%s/sd-model-ckpt.XXXXXX", tmp && *tmp ? tmp : "/tmp");
        fd = mkstemp(tpl);
        if (fd < 0) {
            rc = sd_err(SD_EIO, "%s: cannot create a temporary file for the conversion: %s", tpl, strerror(errno));
        } else {
            unlink(tpl);
            int fd2 = dup(fd);
            fp = fd2 >= 0 ? fdopen(fd2, "w+b") : NULL;
            if (!fp) {
                if (fd2 >= 0) close(fd2);
                rc = sd_err(SD_EIO, "%s: %s", tpl, strerror(errno));
            }
        }
    }
    if (!rc) rc = sd_safetensors_writer_write_fp(w, fp, path);
    if (!rc && fflush(fp)) rc = sd_err(SD_EIO, "%s: writing the temporary conversion: %s", path, strerror(errno));
    if (fp) fclose(fp);
    if (!rc) {
        struct stat sb;
        if (fstat(fd, &sb) || sb.st_size < 8) {
            rc = sd_err(SD_EIO, "%s: temporary conversion: %s", path, strerror(errno ? errno : EIO));
        } else {
            f->map_len = (size_t)sb.st_size;
            f->map = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
            if (f->map == MAP_FAILED) {
                f->map = NULL;
                rc = sd_err(SD_EIO, "%s: mapping the temporary conversion: %s", path, strerror(errno));
            }
        }
    }
    if (fd >= 0) close(fd);
    if (!rc) rc = sd_safetensors_open_mem(f->map, f->map_len, path, &f->st);
    if (!rc) f->ckpt_skipped = sd_ckpt_skipped(ck);
    sd_safetensors_writer_free(w);
    free(views);
    sd_ckpt_close(ck);
    return rc;
}

int sd_model_file_open(const char *path, sd_model_file *f)
{
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return sd_err(e == ENOENT ? SD_ENOTFOUND : SD_EIO, "%s: %s", path, strerror(e));
    }
    unsigned char head[9] = { 0 };
    ssize_t got = read(fd, head, sizeof head);
    struct stat sb;
    int st_ok = !fstat(fd, &sb);
    close(fd);
    if (got < 0 || !st_ok) return sd_err(SD_EIO, "%s: %s", path, strerror(errno));
    f->path = strdup(path);
    if (!f->path) return sd_err(SD_ENOMEM, "out of memory");
    /* safetensors: 8-byte little-endian header length, then '{' (the length's low bytes may
     * look like anything, so this is checked first); a torch zip starts "PK\3\4", an old
     * torch.save pickle with the protocol opcode 0x80 (the ckpt reader says it is not supported) */
    uint64_t hl = 0;
    for (int i = 0; i < 8 && i < got; i++) hl |= (uint64_t)head[i] << (8 * i);
    int is_st = got == 9 && head[8] == '{' && hl >= 2 && hl <= (uint64_t)sb.st_size - 8;
    int is_ckpt = !is_st && ((got >= 4 && !memcmp(head, "PK\3\4", 4)) || (got >= 2 && head[0] == 0x80 && head[1] <= 5));
    if (!is_st && !is_ckpt) {
        /* neither: the name says which reader's message to give */
        size_t l = strlen(path);
        static const char *const ext[] = { ".ckpt", ".pt", ".pth", ".bin" };
        for (size_t i = 0; i < sizeof ext / sizeof *ext; i++)
            if (l > strlen(ext[i]) && !strcasecmp(path + l - strlen(ext[i]), ext[i])) is_ckpt = 1;
    }
    int rc;
    if (is_ckpt) {
        f->format = SD_MODEL_FMT_CKPT;
        rc = ckpt_convert(path, f);
    } else {
        f->format = SD_MODEL_FMT_SAFETENSORS;
        rc = sd_safetensors_open(path, &f->st);
    }
    if (rc) sd_model_file_close(f);
    return rc;
}

void sd_model_file_close(sd_model_file *f)
{
    sd_safetensors_close(f->st);
    if (f->map) munmap(f->map, f->map_len);
    free(f->path);
    memset(f, 0, sizeof *f);
}

/* ---- component classification ---------------------------------------------------------------- */

static int starts(const char *s, const char *p)
{
    return !strncmp(s, p, strlen(p));
}

static int unet_bare_name(const char *n)
{
    return starts(n, "input_blocks.") || starts(n, "middle_block.") || starts(n, "output_blocks.") ||
           starts(n, "time_embed.") || starts(n, "out.") || starts(n, "label_emb.");
}

static int unet_diffusers_name(const char *n)
{
    return starts(n, "conv_in.") || starts(n, "down_blocks.") || starts(n, "mid_block.") || starts(n, "up_blocks.") ||
           starts(n, "time_embedding.") || starts(n, "conv_norm_out.") || starts(n, "conv_out.") ||
           starts(n, "add_embedding.") || starts(n, "class_embedding.");
}

static int vae_bare_name(const char *n)
{
    return starts(n, "encoder.") || starts(n, "decoder.") || starts(n, "quant_conv.") || starts(n, "post_quant_conv.");
}

unsigned sd_model_tensor_component(const sd_detect_info *fi, const char *n)
{
    if (starts(n, "model.diffusion_model.")) return SD_MODEL_UNET;
    if (starts(n, "first_stage_model.")) return starts(n, "first_stage_model.loss.") ? 0 : SD_MODEL_VAE;
    if (starts(n, "cond_stage_model.") || starts(n, "conditioner.embedders.")) return SD_MODEL_TE;
    if ((fi->unet == SD_LAYOUT_LDM_BARE && unet_bare_name(n)) ||
        (fi->unet == SD_LAYOUT_DIFFUSERS && unet_diffusers_name(n)))
        return SD_MODEL_UNET;
    if ((fi->vae == SD_LAYOUT_LDM_BARE || fi->vae == SD_LAYOUT_DIFFUSERS) && vae_bare_name(n)) return SD_MODEL_VAE;
    if ((fi->text_encoder == SD_LAYOUT_DIFFUSERS || fi->text_encoder2 == SD_LAYOUT_DIFFUSERS) &&
        (starts(n, "text_model.") || !strcmp(n, "text_projection.weight")))
        return SD_MODEL_TE;
    return 0;
}

/* Layouts from names alone, for files the detector cannot place (shapes outside the presets,
 * e.g. a UNet without attention on its first level): used only with --model_config. */
static void guess_layouts(const sd_safetensors *st, sd_detect_info *in)
{
    in->unet = in->vae = in->text_encoder = in->text_encoder2 = SD_LAYOUT_NONE;
    in->unet_prefix = in->vae_prefix = in->te_prefix = in->te2_prefix = "";
    for (size_t i = 0; i < sd_safetensors_count(st); i++) {
        const char *n = sd_safetensors_at(st, i)->name;
        if (starts(n, "model.diffusion_model.")) {
            in->unet = SD_LAYOUT_LDM;
            in->unet_prefix = "model.diffusion_model.";
        } else if (!in->unet && unet_bare_name(n)) {
            in->unet = SD_LAYOUT_LDM_BARE;
        } else if (!in->unet && unet_diffusers_name(n)) {
            in->unet = SD_LAYOUT_DIFFUSERS;
        }
        if (starts(n, "first_stage_model.")) {
            in->vae = SD_LAYOUT_LDM;
            in->vae_prefix = "first_stage_model.";
        } else if (in->vae != SD_LAYOUT_LDM && (starts(n, "encoder.down_blocks.") || starts(n, "decoder.up_blocks."))) {
            in->vae = SD_LAYOUT_DIFFUSERS;
        } else if (!in->vae && vae_bare_name(n)) {
            in->vae = SD_LAYOUT_LDM_BARE;
        }
        if (starts(n, "cond_stage_model.transformer.")) {
            in->text_encoder = SD_LAYOUT_LDM;
            in->te_prefix = "cond_stage_model.transformer.";
        } else if (starts(n, "cond_stage_model.model.")) {
            in->text_encoder = SD_LAYOUT_LDM;
            in->te_prefix = "cond_stage_model.model.";
        } else if (starts(n, "conditioner.embedders.0.transformer.")) {
            in->text_encoder = SD_LAYOUT_LDM;
            in->te_prefix = "conditioner.embedders.0.transformer.";
        } else if (starts(n, "conditioner.embedders.1.model.")) {
            in->text_encoder2 = SD_LAYOUT_LDM;
            in->te2_prefix = "conditioner.embedders.1.model.";
        } else if (!in->text_encoder && !in->text_encoder2 && starts(n, "text_model.")) {
            in->text_encoder = SD_LAYOUT_DIFFUSERS;
        }
    }
    if (in->text_encoder == SD_LAYOUT_DIFFUSERS && sd_safetensors_find(st, "text_projection.weight")) {
        in->text_encoder = SD_LAYOUT_NONE;   /* CLIPTextModelWithProjection: SDXL's text_encoder_2 */
        in->text_encoder2 = SD_LAYOUT_DIFFUSERS;
    }
}

/* ---- configuration ---------------------------------------------------------------------------- */

/* ---- Diffusers config.json -------------------------------------------------------------------- */

/* Read DIR/SUB/config.json as a jv object; JV_INVALID (no message) when the file is absent. */
static int read_json_obj(const char *dir, const char *sub, jv *out)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s/config.json", dir, sub);
    *out = jv_invalid();
    struct stat sb;
    if (stat(p, &sb)) return SD_OK;
    char *text = NULL;
    size_t n = 0;
    int rc = sd_read_file(p, (size_t)1 << 20, &text, &n);
    if (rc) return rc;
    rc = sd_json_parse(text, n, out);
    free(text);
    if (rc) return sd_err_prefix(rc, "%s", p);
    if (jv_get_kind(*out) != JV_KIND_OBJECT) {
        jv_free(*out);
        *out = jv_invalid();
        return sd_err(SD_EFORMAT, "%s: not a JSON object", p);
    }
    return SD_OK;
}

static jv jget(jv obj, const char *key)
{
    return jv_is_valid(obj) ? jv_object_get(jv_copy(obj), jv_string(key)) : jv_invalid();
}

/* obj[key] copied into dst[dkey] when present and not null */
static jv jcopy(jv dst, jv obj, const char *key, const char *dkey)
{
    jv v = jget(obj, key);
    if (jv_is_valid(v) && jv_get_kind(v) != JV_KIND_NULL) return jv_object_set(dst, jv_string(dkey), v);
    jv_free(v);
    return dst;
}

/* An integer value (consumes v). */
static int jint(jv v, int *out)
{
    int ok = jv_get_kind(v) == JV_KIND_NUMBER;
    double d = ok ? jv_number_value(v) : 0;
    jv_free(v);
    if (!ok || !(d >= -(1 << 30) && d <= (1 << 30)) || d != (int)d) return 0;
    *out = (int)d;
    return 1;
}

/* block_out_channels [c0, c1, ...] -> base channels and multipliers (consumes boc) */
static int channels(jv boc, const char *file, int *base, jv *mult)
{
    int n = jv_get_kind(boc) == JV_KIND_ARRAY ? jv_array_length(jv_copy(boc)) : 0, c0 = 0;
    if (n < 1 || n > SD_CFG_MAX_LEVELS || !jint(jv_array_get(jv_copy(boc), 0), &c0) || c0 < 1) {
        jv_free(boc);
        return sd_err(SD_EFORMAT, "%s: block_out_channels: expected a list of 1 to %d channel counts", file,
                      SD_CFG_MAX_LEVELS);
    }
    *mult = jv_array();
    for (int i = 0; i < n; i++) {
        int c = 0;
        if (!jint(jv_array_get(jv_copy(boc), i), &c) || c < 1 || c % c0) {
            jv_free(*mult);
            jv_free(boc);
            return sd_err(SD_EFORMAT, "%s: block_out_channels: %d is not a multiple of the first entry %d", file, c, c0);
        }
        *mult = jv_array_append(*mult, jv_number(c / c0));
    }
    jv_free(boc);
    *base = c0;
    return SD_OK;
}

/* The clip / clip2 section of a Diffusers text encoder's config.json (HF CLIPTextConfig names). */
static jv te_config_jv(jv t, int extra_layer)
{
    jv o = jv_object();
    o = jcopy(o, t, "hidden_size", "width");
    o = jcopy(o, t, "num_attention_heads", "heads");
    o = jcopy(o, t, "max_position_embeddings", "max_len");
    o = jcopy(o, t, "vocab_size", "vocab_size");
    o = jcopy(o, t, "projection_dim", "projection_dim");
    int nl;
    if (jint(jget(t, "num_hidden_layers"), &nl)) o = jv_object_set(o, jv_string("layers"), jv_number(nl + extra_layer));
    return o;
}

/* The model config of a Diffusers folder from its unet/, text_encoder/, text_encoder_2/ (SDXL) and
 * vae/ config.json files (Diffusers names mapped to the ldm ones), on the preset of the family they
 * show. *found = 0 when the folder has none of them. */
static int diffusers_config(const char *dir, int v2, sd_model_config *cfg, int *found)
{
    jv u, t, t2 = jv_invalid(), v;
    *found = 0;
    int rc = read_json_obj(dir, "unet", &u);
    if (!rc) rc = read_json_obj(dir, "text_encoder", &t);
    else t = jv_invalid();
    if (!rc) rc = read_json_obj(dir, "text_encoder_2", &t2);
    if (!rc) rc = read_json_obj(dir, "vae", &v);
    else v = jv_invalid();
    if (rc) goto out;
    *found = jv_is_valid(u) || jv_is_valid(t) || jv_is_valid(t2) || jv_is_valid(v);
    if (!*found) goto out;
    char name[4096];
    snprintf(name, sizeof name, "%s (Diffusers config.json)", dir);
    /* family: a second text encoder or a text_time addition embedding is SDXL; else the
     * cross-attention width, else the text encoder's activation, else --v2 */
    sd_family fam = v2 ? SD_FAMILY_SD2 : SD_FAMILY_SD1;
    int cad = 0;
    jv act = jget(t, "hidden_act"), aet = jget(u, "addition_embed_type");
    if (jv_is_valid(t2) || (jv_get_kind(aet) == JV_KIND_STRING && !strcmp(jv_string_value(aet), "text_time")))
        fam = SD_FAMILY_SDXL;
    else if (jint(jget(u, "cross_attention_dim"), &cad) && (cad == 768 || cad == 1024)) fam = cad == 768 ? SD_FAMILY_SD1 : SD_FAMILY_SD2;
    else if (jv_get_kind(act) == JV_KIND_STRING) fam = strcmp(jv_string_value(act), "quick_gelu") ? SD_FAMILY_SD2 : SD_FAMILY_SD1;
    jv_free(act);
    jv_free(aet);
    jv r = jv_object();
    r = jv_object_set(r, jv_string("family"), jv_string(fam == SD_FAMILY_SDXL ? "sdxl" : fam == SD_FAMILY_SD2 ? "sd2" : "sd1"));
    if (jv_is_valid(u)) {
        jv o = jv_object(), mult;
        int base;
        if ((rc = channels(jget(u, "block_out_channels"), name, &base, &mult))) { jv_free(o); jv_free(r); goto out; }
        o = jv_object_set(o, jv_string("model_channels"), jv_number(base));
        int nlev = jv_array_length(jv_copy(mult));
        o = jv_object_set(o, jv_string("channel_mult"), mult);
        o = jcopy(o, u, "layers_per_block", "num_res_blocks");
        o = jcopy(o, u, "cross_attention_dim", "context_dim");
        o = jcopy(o, u, "use_linear_projection", "use_linear_in_transformer");
        o = jcopy(o, u, "in_channels", "in_channels");
        o = jcopy(o, u, "out_channels", "out_channels");
        o = jcopy(o, u, "transformer_layers_per_block", "transformer_depth");
        o = jcopy(o, u, "projection_class_embeddings_input_dim", "adm_in_channels");
        jv types = jget(u, "down_block_types"), attn = jv_array();
        jv tlpb = jget(u, "transformer_layers_per_block"), depth = jv_array();
        int nt = jv_get_kind(types) == JV_KIND_ARRAY ? jv_array_length(jv_copy(types)) : -1;
        int per_level = jv_get_kind(tlpb) == JV_KIND_ARRAY && jv_array_length(jv_copy(tlpb)) == nt;
        for (int i = 0; i < nt; i++) {
            jv ty = jv_array_get(jv_copy(types), i);
            int ca = jv_get_kind(ty) == JV_KIND_STRING && strstr(jv_string_value(ty), "CrossAttn");
            if (ca) attn = jv_array_append(attn, jv_number(1 << i));
            /* Diffusers lists a depth for every level (SDXL [1, 2, 10]); the plain DownBlock2D
             * levels have no transformer: ldm's transformer_depth is 0 there ([0, 2, 10]) */
            if (per_level) depth = jv_array_append(depth, ca ? jv_array_get(jv_copy(tlpb), i) : jv_number(0));
            jv_free(ty);
        }
        jv_free(types);
        jv_free(tlpb);
        if (per_level) o = jv_object_set(o, jv_string("transformer_depth"), depth);
        else jv_free(depth);
        if (nt >= 0) o = jv_object_set(o, jv_string("attention_resolutions"), attn);
        else jv_free(attn);
        /* heads: Diffusers' attention_head_dim is the number of heads (an int, or one per level);
         * num_attention_heads, when set, wins */
        jv h = jget(u, "num_attention_heads");
        if (!jv_is_valid(h) || jv_get_kind(h) == JV_KIND_NULL) {
            jv_free(h);
            h = jget(u, "attention_head_dim");
        }
        int hv;
        if (jint(jv_copy(h), &hv)) {
            o = jv_object_set(o, jv_string("num_heads"), jv_number(hv));
            o = jv_object_set(o, jv_string("num_head_channels"), jv_number(-1));
        } else if (jv_get_kind(h) == JV_KIND_ARRAY && jv_array_length(jv_copy(h)) == nlev) {
            /* one head count per level: SD2's fixed head width */
            int hc = -1, ok = 1;
            for (int i = 0; i < nlev && ok; i++) {
                int hi, mi;
                ok = jint(jv_array_get(jv_copy(h), i), &hi) && hi > 0 &&
                     jint(jv_array_get(jv_object_get(jv_copy(o), jv_string("channel_mult")), i), &mi) &&
                     (base * mi) % hi == 0 && (hc < 0 || hc == base * mi / hi);
                if (ok) hc = base * mi / hi;
            }
            if (!ok) {
                jv_free(h);
                jv_free(o);
                jv_free(r);
                rc = sd_err(SD_EUNSUPPORTED, "%s: attention_head_dim: per-level head counts with different head widths "
                            "are not supported", name);
                goto out;
            }
            o = jv_object_set(o, jv_string("num_heads"), jv_number(-1));
            o = jv_object_set(o, jv_string("num_head_channels"), jv_number(hc));
        }
        jv_free(h);
        r = jv_object_set(r, jv_string("unet"), o);
    }
    /* SD2's Diffusers text encoder stores the layers that run; the config counts one more. SDXL's
     * text encoders store all their layers (and text_encoder's projection_dim is unused) */
    if (jv_is_valid(t)) {
        jv o = te_config_jv(t, fam == SD_FAMILY_SD2);
        o = jv_object_delete(o, jv_string("projection_dim"));
        r = jv_object_set(r, jv_string("clip"), o);
    }
    if (jv_is_valid(t2)) r = jv_object_set(r, jv_string("clip2"), te_config_jv(t2, 0));
    if (jv_is_valid(v)) {
        jv o = jv_object(), mult;
        int base;
        if ((rc = channels(jget(v, "block_out_channels"), name, &base, &mult))) { jv_free(o); jv_free(r); goto out; }
        o = jv_object_set(o, jv_string("ch"), jv_number(base));
        o = jv_object_set(o, jv_string("ch_mult"), mult);
        o = jcopy(o, v, "layers_per_block", "num_res_blocks");
        o = jcopy(o, v, "latent_channels", "z_channels");
        o = jcopy(o, v, "latent_channels", "embed_dim");
        o = jcopy(o, v, "in_channels", "in_channels");
        o = jcopy(o, v, "out_channels", "out_ch");
        o = jcopy(o, v, "scaling_factor", "scale_factor");
        r = jv_object_set(r, jv_string("vae"), o);
    }
    sd_model_config c;
    sd_model_config_preset(fam, &c);
    rc = sd_model_config_apply(&c, r, name);
    jv_free(r);
    if (!rc) rc = sd_model_config_validate(&c);
    if (rc && !strstr(sd_errmsg(), dir)) sd_err_prefix(rc, "%s", name);
    if (!rc) *cfg = c;
out:
    jv_free(u);
    jv_free(t);
    jv_free(t2);
    jv_free(v);
    return rc;
}

/* ---- opening ---------------------------------------------------------------------------------- */

static int is_dir(const char *p)
{
    struct stat sb;
    return !stat(p, &sb) && S_ISDIR(sb.st_mode);
}

static int is_dir_sub(const char *dir, const char *sub)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, sub);
    return is_dir(p);
}

static int is_file(const char *p)
{
    struct stat sb;
    return !stat(p, &sb) && S_ISREG(sb.st_mode);
}

/* The weight file of a Diffusers component folder, or NULL (caller frees). */
static char *diffusers_weights(const char *dir, const char *stem)
{
    static const char *const suffix[] = { ".safetensors", ".fp16.safetensors", ".bin", ".fp16.bin" };
    char buf[4096];
    for (size_t i = 0; i < sizeof suffix / sizeof *suffix; i++) {
        snprintf(buf, sizeof buf, "%s/%s%s", dir, stem, suffix[i]);
        if (is_file(buf)) return strdup(buf);
    }
    return NULL;
}

static int add_file(sd_model *m, const char *path, sd_model_file **out)
{
    sd_model_file *f = &m->files[m->nfiles];
    int rc = sd_model_file_open(path, f);
    if (rc) return rc;
    m->nfiles++;
    *out = f;
    return SD_OK;
}

/* Detect one file. Returns SD_OK with *fam_known = 1 when the detector placed it, SD_OK with
 * *fam_known = 0 when only a --model_config can describe it (layouts guessed from the names), or
 * the detector's error. */
static int detect_file(sd_model_file *f, int have_config, sd_detect_info *in, int *fam_known)
{
    int rc = sd_detect_model(f->st, in);
    /* the weights tell the family only through a UNet or a text encoder of a known width */
    *fam_known = rc == SD_OK && (in->family == SD_FAMILY_SD1 || in->family == SD_FAMILY_SD2) &&
                 (in->unet || in->text_encoder);
    if (rc == SD_OK) {
        f->info = *in;
        return SD_OK;
    }
    if (rc == SD_EUNSUPPORTED && in->family == SD_FAMILY_UNKNOWN) {
        if (!have_config) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", sd_errmsg());
            return sd_err(rc, "%s (describe it with --model_config)", msg);
        }
        sd_err_clear();
        guess_layouts(f->st, in);
        f->info = *in;
        if (in->unet || in->vae || in->text_encoder) return SD_OK;
        return sd_err(SD_EFORMAT, "%s: no UNet, VAE or text encoder tensors of an SD model found", f->path);
    }
    return rc;
}

static const char *part_name(unsigned p)
{
    return p == SD_MODEL_UNET ? "UNet" : p == SD_MODEL_TE ? "text encoder" : "VAE";
}

static int open_vae_replacement(sd_model *m, const char *vae, int have_config)
{
    char *path = NULL;
    if (is_dir(vae)) {
        path = diffusers_weights(vae, "diffusion_pytorch_model");
        if (!path) {
            char sub[4096];
            snprintf(sub, sizeof sub, "%s/vae", vae);
            path = diffusers_weights(sub, "diffusion_pytorch_model");
        }
        if (!path)
            return sd_err(SD_ENOTFOUND, "%s: no diffusion_pytorch_model.safetensors (or .bin) in this folder or its vae/",
                          vae);
    } else {
        path = strdup(vae);
        if (!path) return sd_err(SD_ENOMEM, "out of memory");
    }
    sd_model_file *f;
    int rc = add_file(m, path, &f);
    free(path);
    if (rc) return rc;
    sd_detect_info in;
    int known;
    rc = detect_file(f, have_config, &in, &known);
    if (rc) return rc;
    if (!in.vae) return sd_err(SD_EFORMAT, "%s: no VAE tensors in this file", f->path);
    m->vae_src = f;
    m->vae_layout = in.vae;
    f->role = SD_MODEL_VAE;
    m->present |= SD_MODEL_VAE;
    return SD_OK;
}

int sd_model_open(sd_model *m, const char *path, const sd_model_opts *opts)
{
    memset(m, 0, sizeof *m);
    sd_params_init(&m->unet_params);
    sd_params_init(&m->te_params);
    sd_params_init(&m->vae_params);
    sd_model_opts o = { 0 };
    if (opts) o = *opts;
    else o.v_param = -1;
    if (!o.parts) o.parts = SD_MODEL_ALL;
    int have_config = o.config != NULL;
    int rc = SD_OK;
    m->path = strdup(path);
    if (!m->path) return sd_err(SD_ENOMEM, "out of memory");
    int known = 0;
    sd_model_config dcfg;
    int have_dcfg = 0;
    if (is_dir(path)) {
        m->format = SD_MODEL_FMT_DIFFUSERS;
        if (!have_config && (rc = diffusers_config(path, o.v2, &dcfg, &have_dcfg))) return rc;
        /* component folders: name, weight file stem, part */
        static const struct { const char *sub, *stem; unsigned part; } comp[4] = {
            { "unet", "diffusion_pytorch_model", SD_MODEL_UNET },
            { "text_encoder", "model", SD_MODEL_TE },
            { "text_encoder_2", "model", SD_MODEL_TE },
            { "vae", "diffusion_pytorch_model", SD_MODEL_VAE },
        };
        int any = 0;
        sd_detect_info merged;
        memset(&merged, 0, sizeof merged);
        merged.unet_prefix = merged.vae_prefix = merged.te_prefix = merged.te2_prefix = "";
        for (int c = 0; c < 4 && !rc; c++) {
            char dir[4096];
            snprintf(dir, sizeof dir, "%s/%s", path, comp[c].sub);
            char *w = is_dir(dir) ? diffusers_weights(dir, comp[c].stem) : NULL;
            if (!w) continue;
            sd_model_file *f;
            rc = add_file(m, w, &f);
            free(w);
            if (rc) break;
            sd_detect_info in;
            int k;
            if ((rc = detect_file(f, have_config || have_dcfg, &in, &k))) break;
            sd_layout lay = c == 0 ? in.unet : c == 1 ? in.text_encoder : c == 2 ? in.text_encoder2 : in.vae;
            if (!lay) {
                rc = sd_err(SD_EFORMAT, "%s: no %s tensors in this file", f->path,
                            c == 2 ? "text encoder 2 (CLIPTextModelWithProjection)" : part_name(comp[c].part));
                break;
            }
            any = 1;
            f->role = comp[c].part;
            if (c == 0) {
                m->unet_src = f;
                m->unet_layout = lay;
                merged.unet = lay;
                merged.in_channels = in.in_channels;
                merged.context_dim = in.context_dim;
                merged.unet_matches_preset = in.unet_matches_preset;
                if (k) merged.family = in.family;
                known |= k;
            } else if (c == 1 || c == 2) {
                if (c == 1) m->te_src = f, m->te_layout = lay, merged.text_encoder = lay;
                else m->te2_src = f, m->te2_layout = lay, merged.text_encoder2 = lay;
                sd_family tf = in.family;
                /* SD1 and SDXL's text_encoder are the same CLIP ViT-L: the UNet or text_encoder_2 decides */
                if (c == 1 && tf == SD_FAMILY_SD1 && (merged.family == SD_FAMILY_SDXL || is_dir_sub(path, "text_encoder_2")))
                    tf = SD_FAMILY_SDXL;
                if (k && !merged.family) merged.family = tf, known = 1;
                else if (k && tf != merged.family)
                    rc = sd_err(SD_EFORMAT, "%s: the UNet is %s but the text encoder is %s", path,
                                sd_family_name(merged.family), sd_family_name(tf));
            } else {
                m->vae_src = f;
                m->vae_layout = lay;
                merged.vae = lay;
                if (k && !merged.family) merged.family = in.family, known = 1;
            }
        }
        if (!rc && !any)
            rc = sd_err(SD_EFORMAT, "%s: not a Diffusers model folder (no unet/, text_encoder/ or vae/ weights)", path);
        if (!rc && !merged.family && !merged.unet && !merged.text_encoder && !merged.text_encoder2)
            merged.family = SD_FAMILY_SD1;   /* a VAE alone */
        if (!rc) {
            sd_model_config_preset(merged.family ? merged.family : SD_FAMILY_SD1, &merged.cfg);
            if (merged.in_channels) merged.cfg.unet.in_channels = merged.in_channels;
            snprintf(merged.description, sizeof merged.description, "%s Diffusers folder:%s%s%s%s",
                     sd_family_name(merged.family), merged.unet ? " UNet" : "", merged.text_encoder ? " text-encoder" : "",
                     merged.text_encoder2 ? " text-encoder-2" : "", merged.vae ? " VAE" : "");
            m->info = merged;
        }
    } else {
        sd_model_file *f;
        rc = add_file(m, path, &f);
        if (!rc) {
            m->format = f->format;
            rc = detect_file(f, have_config, &m->info, &known);
        }
        if (!rc) {
            f->role = (m->info.unet ? SD_MODEL_UNET : 0) | (m->info.text_encoder ? SD_MODEL_TE : 0) |
                      (m->info.vae ? SD_MODEL_VAE : 0);
            if (m->info.unet) m->unet_src = f, m->unet_layout = m->info.unet;
            if (m->info.text_encoder) m->te_src = f, m->te_layout = m->info.text_encoder;
            if (m->info.text_encoder2) m->te2_src = f, m->te2_layout = m->info.text_encoder2;
            if (m->info.text_encoder2) f->role |= SD_MODEL_TE;
            if (m->info.vae) m->vae_src = f, m->vae_layout = m->info.vae;
        }
    }
    if (rc) return rc;
    if (m->unet_src) m->present |= SD_MODEL_UNET;
    if (m->te_src || m->te2_src) m->present |= SD_MODEL_TE;
    if (m->vae_src) m->present |= SD_MODEL_VAE;
    if (o.vae && ((o.parts & SD_MODEL_VAE) || o.inspect)) {
        if ((rc = open_vae_replacement(m, o.vae, have_config))) return rc;
    }

    /* configuration */
    if (have_config) {
        /* --v2 picks the SD2 preset for a file that names no family */
        if ((rc = sd_model_config_load_family(o.config, o.v2 ? SD_FAMILY_SD2 : SD_FAMILY_SD1, &m->cfg))) return rc;
        if (o.v_param >= 0) m->cfg.parameterization = o.v_param ? SD_PRED_V : SD_PRED_EPS;
        if (known && m->info.family != m->cfg.family && (m->info.unet || m->info.text_encoder))
            snprintf(m->warning, sizeof m->warning, "%s: the weights look like %s, the model config says %s", path,
                     sd_family_name(m->info.family), sd_family_name(m->cfg.family));
    } else if (have_dcfg && !(known && (!m->info.unet || m->info.unet_matches_preset))) {
        /* shapes the presets do not have: the folder's config.json files describe them */
        m->cfg = dcfg;
        if (o.v_param >= 0) m->cfg.parameterization = o.v_param ? SD_PRED_V : SD_PRED_EPS;
    } else {
        sd_detect_info in = m->info;
        if (o.v2 && !in.unet && !in.text_encoder) {
            /* nothing in the weights tells SD1 from SD2 (a VAE alone): --v2 decides */
            in.family = SD_FAMILY_SD2;
            sd_model_config_preset(SD_FAMILY_SD2, &in.cfg);
        } else if (o.v2 && in.family == SD_FAMILY_SD1) {
            snprintf(m->warning, sizeof m->warning, "%s: --v2 ignored: the weights are SD1.x", path);
        }
        if (in.family != SD_FAMILY_SD1 && in.family != SD_FAMILY_SD2 && in.family != SD_FAMILY_SDXL)
            return sd_err(SD_EUNSUPPORTED, "%s: the shapes are not those of SD1.x, SD2.x or SDXL: describe the model "
                          "with --model_config", path);
        rc = sd_detect_config(&in, NULL, o.v_param, &m->cfg);
        if (rc) return sd_err_prefix(rc, "%s", path);
    }
    int described = have_config || (have_dcfg && !(known && (!m->info.unet || m->info.unet_matches_preset)));
    if (have_config) m->family_from = "model_config";
    else if (described) m->family_from = "diffusers_config";
    else if (m->info.unet || m->info.text_encoder || m->info.text_encoder2) m->family_from = "weights";
    else m->family_from = o.v2 ? "--v2" : "default";
    m->detected = known && (m->info.unet || m->info.text_encoder || m->info.text_encoder2);
    if (!known && described) {
        /* the detector could not place the shapes: describe what the names show */
        const sd_detect_info *di = &m->info;
        snprintf(m->info.description, sizeof m->info.description, "%s %s:%s%s%s%s%s (shapes from %s)",
                 sd_family_name(m->cfg.family),
                 m->format == SD_MODEL_FMT_DIFFUSERS ? "Diffusers folder"
                 : di->unet && di->vae && di->text_encoder ? "single-file checkpoint" : "component file",
                 di->unet ? " UNet" : "", di->text_encoder ? " text-encoder" : "",
                 di->text_encoder2 ? " text-encoder-2" : "", di->vae ? " VAE" : "",
                 di->unet == SD_LAYOUT_DIFFUSERS || di->vae == SD_LAYOUT_DIFFUSERS || di->text_encoder == SD_LAYOUT_DIFFUSERS
                     ? " (Diffusers names)" : "",
                 have_config ? "--model_config" : "config.json");
        m->info.family = m->cfg.family;
    }
    /* the description starts with the detector's family: say the one in use */
    const char *dname = sd_family_name(m->info.family), *cname = sd_family_name(m->cfg.family);
    size_t dl = strlen(dname);
    if (strcmp(dname, cname) && !strncmp(m->info.description, dname, dl) && m->info.description[dl] == ' ') {
        char rest[sizeof m->info.description];
        snprintf(rest, sizeof rest, "%s", m->info.description + dl);
        snprintf(m->info.description, sizeof m->info.description, "%s%s", cname, rest);
    }

    /* components */
    if (o.inspect) return SD_OK;
    unsigned want = o.parts;
    for (unsigned p = 1; p <= SD_MODEL_VAE; p <<= 1) {
        if ((want & p) && !(m->present & p))
            return sd_err(SD_ENOTFOUND, "%s: no %s in this model%s", path, part_name(p),
                          p == SD_MODEL_VAE ? " (give one with --vae)" : "");
    }
    if (want & SD_MODEL_UNET)
        if ((rc = sd_unet_init(&m->unet, &m->unet_params, "model.diffusion_model", &m->cfg.unet))) goto fail;
    m->parts |= want & SD_MODEL_UNET;
    if ((want & SD_MODEL_TE) && m->cfg.family == SD_FAMILY_SDXL) {
        /* both text encoders, each from its own source */
        if (!m->te_src || !m->te2_src) {
            rc = sd_err(SD_ENOTFOUND, "no SDXL text encoder %d in this model", m->te_src ? 2 : 1);
            goto fail;
        }
        if ((rc = sd_clip_init(&m->clip, &m->te_params, "conditioner.embedders.0.transformer", &m->cfg.clip,
                               SD_FAMILY_SDXL)))
            goto fail;
        m->parts |= SD_MODEL_TE;
        if ((rc = sd_clip_init(&m->clip2, &m->te_params, "conditioner.embedders.1.model", &m->cfg.clip2,
                               SD_FAMILY_SDXL)))
            goto fail;
        m->have_clip2 = 1;
    } else if (want & SD_MODEL_TE) {
        if (!m->te_src) {
            rc = sd_err(SD_ENOTFOUND, "no text encoder in this model");
            goto fail;
        }
        if ((rc = sd_clip_init(&m->clip, &m->te_params, "cond_stage_model.transformer", &m->cfg.clip, m->cfg.family)))
            goto fail;
        m->parts |= SD_MODEL_TE;
    }
    if (want & SD_MODEL_VAE)
        if ((rc = sd_vae_init(&m->vae, &m->vae_params, "first_stage_model", &m->cfg.vae))) goto fail;
    m->parts |= want & SD_MODEL_VAE;
    return SD_OK;
fail:
    return sd_err_prefix(rc, "%s", path);
}

sd_st_dtype sd_model_source_dtype(const sd_model *m, unsigned part)
{
    const sd_model_file *f = part == SD_MODEL_UNET ? m->unet_src : part == SD_MODEL_TE ? m->te_src
                             : part == SD_MODEL_VAE ? m->vae_src : NULL;
    if (!f || !f->st) return SD_ST_F32;
    int seen = -1;
    for (size_t i = 0; i < sd_safetensors_count(f->st); i++) {
        const sd_st_tensor *t = sd_safetensors_at(f->st, i);
        if (t->ndim < 2 || sd_model_tensor_component(&f->info, t->name) != part) continue;
        if (seen < 0) seen = (int)t->dtype;
        else if (seen != (int)t->dtype) return SD_ST_F32;
    }
    return seen == SD_ST_F16 || seen == SD_ST_BF16 ? (sd_st_dtype)seen : SD_ST_F32;
}

int sd_model_set_inference(sd_model *m)
{
    sd_params *regs[3] = { &m->unet_params, &m->te_params, &m->vae_params };
    for (int c = 0; c < 3; c++) {
        if (!(m->parts & (1u << c))) continue;
        int rc = sd_params_set_trainable(regs[c], "", 0);
        if (rc < 0) return rc;
        sd_st_dtype d = sd_model_source_dtype(m, 1u << c);
        rc = sd_params_set_frozen_dtype(regs[c], d == SD_ST_F16 ? SD_F16 : d == SD_ST_BF16 ? SD_BF16 : SD_F32);
        if (rc) return rc;
    }
    return SD_OK;
}

int sd_model_load(sd_model *m, sd_devkind device)
{
    int rc = SD_OK;
    if (m->parts & SD_MODEL_UNET) {
        if ((rc = sd_params_alloc(&m->unet_params, device))) return rc;
        sd_unet_naming naming = m->unet_layout == SD_LAYOUT_DIFFUSERS ? SD_UNET_NAMES_DIFFUSERS : SD_UNET_NAMES_LDM;
        const char *prefix = m->unet_layout == SD_LAYOUT_LDM ? "model.diffusion_model." : "";
        if ((rc = sd_unet_load(&m->unet, m->unet_src->st, naming, prefix, 0, NULL))) return rc;
    }
    if (m->parts & SD_MODEL_TE) {
        if ((rc = sd_params_alloc(&m->te_params, device))) return rc;
        if (m->have_clip2) {
            if ((rc = sd_clip_load_prefix(&m->clip, &m->te_params, m->te_src->st, m->te_layout, m->te_src->info.te_prefix)))
                return rc;
            if ((rc = sd_clip_load_prefix(&m->clip2, &m->te_params, m->te2_src->st, m->te2_layout,
                                          m->te2_src->info.te2_prefix)))
                return rc;
        } else if ((rc = sd_clip_load(&m->clip, &m->te_params, m->te_src->st, m->te_layout))) {
            return rc;
        }
    }
    if (m->parts & SD_MODEL_VAE) {
        if ((rc = sd_params_alloc(&m->vae_params, device))) return rc;
        if ((rc = sd_vae_load(&m->vae, &m->vae_params, m->vae_src->st, m->vae_layout))) return rc;
    }
    m->loaded = 1;
    return SD_OK;
}

void sd_model_release_source(sd_model *m)
{
    for (int i = 0; i < m->nfiles; i++) sd_model_file_close(&m->files[i]);
    m->nfiles = 0;
    m->unet_src = m->te_src = m->te2_src = m->vae_src = NULL;
}

void sd_model_close(sd_model *m)
{
    if (m->parts & SD_MODEL_UNET) sd_unet_free(&m->unet);
    if (m->parts & SD_MODEL_TE) sd_clip_free(&m->clip);
    if (m->have_clip2) sd_clip_free(&m->clip2);
    if (m->parts & SD_MODEL_VAE) sd_vae_free(&m->vae);
    sd_params_free(&m->unet_params);
    sd_params_free(&m->te_params);
    sd_params_free(&m->vae_params);
    sd_model_release_source(m);
    pools_free(m->write_pools);
    free(m->path);
    memset(m, 0, sizeof *m);
}

/* ---- hashes ----------------------------------------------------------------------------------- */

typedef struct hash_sink {
    uint64_t pos;
    uint8_t len8[8];
    uint64_t data_start;     /* 8 + header length, known after 8 bytes */
    sd_sha256_ctx data, legacy;
} hash_sink;

static ssize_t hash_sink_write(void *c, const char *buf, size_t n)
{
    hash_sink *h = c;
    const uint8_t *p = (const uint8_t *)buf;
    for (size_t i = 0; i < n && h->pos + i < 8; i++) {
        h->len8[h->pos + i] = p[i];
        if (h->pos + i == 7) {
            uint64_t hl = 0;
            for (int k = 0; k < 8; k++) hl |= (uint64_t)h->len8[k] << (8 * k);
            h->data_start = 8 + hl;
        }
    }
    uint64_t a = h->pos, b = h->pos + n;
    if (h->data_start && b > h->data_start) {
        uint64_t s = a > h->data_start ? a : h->data_start;
        sd_sha256_update(&h->data, p + (s - a), (size_t)(b - s));
    }
    uint64_t lo = a > 0x100000 ? a : 0x100000, hi = b < 0x110000 ? b : 0x110000;
    if (hi > lo) sd_sha256_update(&h->legacy, p + (lo - a), (size_t)(hi - lo));
    h->pos = b;
    return (ssize_t)n;
}

static int sshs_hashes(const sd_safetensors *st, char model_hash[65], char legacy_hash[9])
{
    sd_safetensors_writer *w;
    int rc = sd_safetensors_writer_new(&w);
    if (rc) return rc;
    for (size_t i = 0; i < sd_safetensors_count(st) && !rc; i++) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        rc = sd_safetensors_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->nbytes ? t->data : NULL);
    }
    for (size_t i = 0; i < sd_safetensors_meta_count(st) && !rc; i++) {
        const char *k, *v;
        sd_safetensors_meta_at(st, i, &k, &v);
        if (!strncmp(k, "ss_", 3)) rc = sd_safetensors_writer_set_meta(w, k, v);
    }
    hash_sink h;
    memset(&h, 0, sizeof h);
    sd_sha256_init(&h.data);
    sd_sha256_init(&h.legacy);
    cookie_io_functions_t io = { .write = hash_sink_write };
    FILE *fp = rc ? NULL : fopencookie(&h, "w", io);
    if (!rc && !fp) rc = sd_err(SD_ENOMEM, "out of memory");
    if (!rc) rc = sd_safetensors_writer_write_fp(w, fp, sd_safetensors_path(st));
    if (fp) fclose(fp);
    sd_safetensors_writer_free(w);
    if (rc) return rc;
    uint8_t d[32];
    sd_sha256_final(&h.data, d);
    sd_hex(d, 32, model_hash);
    char full[65];
    sd_sha256_final(&h.legacy, d);
    sd_hex(d, 32, full);
    memcpy(legacy_hash, full, 8);
    legacy_hash[8] = 0;
    return SD_OK;
}

int sd_model_file_hashes(const char *path, const sd_safetensors *st, sd_model_hashes *h)
{
    memset(h, 0, sizeof *h);
    int rc = sd_sha256_file(path, h->sha256);
    if (rc) return rc;
    memcpy(h->shorthash, h->sha256, 10);
    /* A1111 model_hash(): seek(0x100000), read(0x10000) */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sd_err(SD_EIO, "%s: %s", path, strerror(errno));
    uint8_t *buf = malloc(0x10000);
    if (!buf) {
        close(fd);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    size_t got = 0;
    while (got < 0x10000) {
        ssize_t r = pread(fd, buf + got, 0x10000 - got, (off_t)(0x100000 + got));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            rc = sd_err(SD_EIO, "%s: %s", path, strerror(errno));
            break;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (!rc) {
        uint8_t d[32];
        char full[65];
        sd_sha256(buf, got, d);
        sd_hex(d, 32, full);
        memcpy(h->a1111_legacy, full, 8);
    }
    free(buf);
    if (!rc && st) {
        rc = sshs_hashes(st, h->sshs_model_hash, h->sshs_legacy_hash);
        h->have_sshs = rc == SD_OK;
    }
    return rc;
}

/* ---- writing ---------------------------------------------------------------------------------- */

static const char TE_PREFIX[] = "cond_stage_model.transformer.text_model.";
#define SDXL_TE1_PREFIX "conditioner.embedders.0.transformer."
#define SDXL_TE2_PREFIX "conditioner.embedders.1.model."

int sd_model_te_file_name(const sd_model *m, const char *key, char *out, size_t n)
{
    if (m->cfg.family == SD_FAMILY_SDXL) {
        int how;
        if (starts(key, SDXL_TE2_PREFIX))
            return sd_clip_openclip_name(key + strlen(SDXL_TE2_PREFIX), SDXL_TE2_PREFIX, out, n, &how);
        if (!starts(key, SDXL_TE1_PREFIX)) return sd_err(SD_ENOTFOUND, "%s: not a text-encoder key", key);
        if ((size_t)snprintf(out, n, "%s", key) >= n) return sd_err(SD_ERANGE, "name too long");
        return SD_OK;
    }
    if (!starts(key, "cond_stage_model.transformer.")) return sd_err(SD_ENOTFOUND, "%s: not a text-encoder key", key);
    if (m->cfg.family != SD_FAMILY_SD2) {
        if ((size_t)snprintf(out, n, "%s", key) >= n) return sd_err(SD_ERANGE, "name too long");
        return SD_OK;
    }
    if (!starts(key, TE_PREFIX)) return sd_err(SD_ENOTFOUND, "%s: no OpenCLIP name", key);
    int how;
    return sd_clip_openclip_name(key + strlen("cond_stage_model.transformer."), "cond_stage_model.model.", out, n, &how);
}

/* A tensor written from up to three registry values (concatenated along axis 0), converted. */
typedef struct write_src {
    const sd_tensor *t[3];
    int nt;
    sd_st_dtype dtype;
} write_src;

typedef struct write_pool {
    write_src *src;
    size_t n, cap;
    void **bufs;
    size_t nbufs;
} write_pool;

static sd_st_dtype st_dtype_of(sd_dtype d)
{
    return d == SD_F16 ? SD_ST_F16 : d == SD_BF16 ? SD_ST_BF16 : d == SD_I32 ? SD_ST_I32
           : d == SD_F8E4M3 ? SD_ST_F8_E4M3 : SD_ST_F32;
}

static int write_src_fn(void *ctx, const char *name, sd_st_sink *sink)
{
    (void)name;
    const write_src *s = ctx;
    size_t osz = sd_st_dtype_size(s->dtype);
    enum { CHUNK = 16384 };
    static _Thread_local unsigned char buf[CHUNK * 4];
    for (int k = 0; k < s->nt; k++) {
        const sd_tensor *t = s->t[k];
        sd_st_dtype sdt = st_dtype_of((sd_dtype)t->dtype);
        size_t isz = sd_st_dtype_size(sdt);
        size_t n = (size_t)sd_tensor_numel(t);
        /* host copy of device values */
        const unsigned char *src = t->data;
        void *host = NULL;
        if (t->device != SD_DEV_CPU) {
            host = malloc(n * isz + 1);
            if (!host) return sd_err(SD_ENOMEM, "out of memory");
            int rc = sd_tensor_download(t, host, n * isz);
            if (rc) {
                free(host);
                return rc;
            }
            src = host;
        }
        int rc = SD_OK;
        for (size_t i = 0; i < n && !rc; i += CHUNK) {
            size_t c = n - i < CHUNK ? n - i : CHUNK;
            rc = sd_st_convert(sdt, src + i * isz, s->dtype, buf, c);
            if (!rc) rc = sd_st_sink_write(sink, buf, c * osz);
        }
        free(host);
        if (rc) return rc;
    }
    return SD_OK;
}

static write_src *pool_new(write_pool *p)
{
    if (p->n == p->cap) return NULL;
    write_src *s = &p->src[p->n++];
    memset(s, 0, sizeof *s);
    return s;
}

static int add_one(sd_safetensors_writer *w, write_pool *pool, const char *name, int ndim, const int64_t *shape,
                   const sd_tensor *const *t, int nt, sd_st_dtype dtype)
{
    write_src *s = pool_new(pool);
    if (!s) return sd_err(SD_ESTATE, "writer pool exhausted");
    for (int i = 0; i < nt; i++) s->t[i] = t[i];
    s->nt = nt;
    s->dtype = dtype;
    return sd_safetensors_writer_add_fn(w, name, dtype, ndim, shape, write_src_fn, s);
}

/* The pools live until the model is closed (the writer only stores pointers). */
struct pool_node {
    write_pool pool;
    struct pool_node *next;
};

static void pools_free(pool_node *p)
{
    while (p) {
        pool_node *n = p->next;
        for (size_t i = 0; i < p->pool.nbufs; i++) free(p->pool.bufs[i]);
        free(p->pool.bufs);
        free(p->pool.src);
        free(p);
        p = n;
    }
}

static void *pool_buf(write_pool *p, size_t bytes)
{
    void **nb = realloc(p->bufs, (p->nbufs + 1) * sizeof *nb);
    if (!nb) return NULL;
    p->bufs = nb;
    void *b = calloc(1, bytes ? bytes : 1);
    if (b) p->bufs[p->nbufs++] = b;
    return b;
}

static int is_vae_attn_matrix(const char *key, const sd_tensor *v)
{
    if (v->ndim != 2 || !starts(key, "first_stage_model.")) return 0;
    const char *a = strstr(key, ".attn_1.");
    if (!a) a = strstr(key, ".attn.");
    if (!a) return 0;
    size_t kl = strlen(key);
    static const char *const suf[] = { ".q.weight", ".k.weight", ".v.weight", ".proj_out.weight" };
    for (size_t i = 0; i < 4; i++) {
        size_t sl = strlen(suf[i]);
        if (kl > sl && !strcmp(key + kl - sl, suf[i])) return 1;
    }
    return 0;
}

/* The OpenCLIP single-file tensors of a text encoder (SD2's, SDXL's TE2) from its registry `te`
 * (keys reg_prefix + HF names) under file_prefix (sd_clip_openclip_name): q/k/v values
 * concatenated into attn.in_proj_*, text_projection.weight transposed into text_projection
 * (a host copy kept in the pool). dup_from ≥ 0: resblock dup_from's tensors are written once
 * more as resblock dup_to (SD2's dropped last layer, kohya make_dummy_weights). Keys outside
 * reg_prefix (SDXL's TE1, in the same registry) are left to the caller. */
static int add_openclip_te(sd_safetensors_writer *w, write_pool *pool, const sd_params *te, const char *reg_prefix,
                           const char *file_prefix, int dup_from, int dup_to, sd_st_dtype dtype)
{
    int rc = SD_OK;
    size_t np = strlen(reg_prefix);
    for (size_t i = 0; i < sd_params_count(te) && !rc; i++) {
        const sd_param *p = sd_params_at(te, i);
        const char *k = p->key;
        if (strstr(k, ".self_attn.k_proj.") || strstr(k, ".self_attn.v_proj.")) continue;
        if (strncmp(k, reg_prefix, np)) continue;
        char name[512];
        int how;
        if ((rc = sd_clip_openclip_name(k + np, file_prefix, name, sizeof name, &how))) break;
        const sd_tensor *ts[3] = { &p->value, NULL, NULL };
        int nt = 1;
        int64_t shape[SD_MAX_DIMS];
        memcpy(shape, p->value.shape, sizeof shape);
        if (how == SD_CLIP_OC_TRANSPOSE) {
            /* [P, W] → [W, P] on the host */
            const sd_tensor *t = &p->value;
            int64_t P = t->shape[0], W = t->shape[1];
            size_t n = (size_t)(P * W), isz = sd_st_dtype_size(st_dtype_of((sd_dtype)t->dtype));
            void *raw = pool_buf(pool, n * isz);
            float *f = pool_buf(pool, n * sizeof(float)), *tr = pool_buf(pool, n * sizeof(float));
            if (!raw || !f || !tr) return sd_err(SD_ENOMEM, "out of memory");
            rc = sd_tensor_download(t, raw, n * isz);
            if (!rc) rc = sd_st_convert(st_dtype_of((sd_dtype)t->dtype), raw, SD_ST_F32, f, n);
            if (rc) break;
            for (int64_t a = 0; a < P; a++)
                for (int64_t b = 0; b < W; b++) tr[b * P + a] = f[a * W + b];
            rc = sd_safetensors_writer_add_f32(w, name, dtype, 2, (const int64_t[]){ W, P }, tr);
            continue;
        }
        if (how == SD_CLIP_OC_QKV) {
            char kk[512];
            const char *which[2] = { "k_proj", "v_proj" };
            for (int j = 0; j < 2 && !rc; j++) {
                snprintf(kk, sizeof kk, "%s", k);
                memcpy(strstr(kk, "q_proj"), which[j], 6);
                const sd_param *o = sd_params_find(te, kk);
                if (!o) rc = sd_err(SD_ESTATE, "%s: missing", kk);
                else ts[nt++] = &o->value;
            }
            shape[0] *= 3;
        }
        if (rc) break;
        rc = add_one(w, pool, name, p->value.ndim, shape, ts, nt, dtype);
        /* the dropped last layer, copied from the last one run */
        int layer = -1;
        if (!rc && dup_from >= 0 && sscanf(k + np, "text_model.encoder.layers.%d.", &layer) == 1 && layer == dup_from) {
            char from[32], to[32], dn[512];
            snprintf(from, sizeof from, ".resblocks.%d.", dup_from);
            snprintf(to, sizeof to, ".resblocks.%d.", dup_to);
            char *at = strstr(name, from);
            if (at) {
                snprintf(dn, sizeof dn, "%.*s%s%s", (int)(at - name), name, to, at + strlen(from));
                rc = add_one(w, pool, dn, p->value.ndim, shape, ts, nt, dtype);
            }
        }
    }
    return rc;
}

int sd_model_add_to_writer(sd_model *m, unsigned parts, sd_safetensors_writer *w, sd_st_dtype dtype)
{
    if (!m->loaded) return sd_err(SD_ESTATE, "sd_model_add_to_writer: model not loaded");
    if (dtype != SD_ST_F32 && dtype != SD_ST_F16 && dtype != SD_ST_BF16)
        return sd_err(SD_EINVAL, "sd_model_add_to_writer: dtype must be F32, F16 or BF16");
    parts &= m->parts;
    size_t total = sd_params_count(&m->unet_params) + sd_params_count(&m->te_params) +
                   sd_params_count(&m->vae_params);
    pool_node *node = calloc(1, sizeof *node);
    if (!node) return sd_err(SD_ENOMEM, "out of memory");
    /* SD2: every layer's tensors once more for the dummy last layer, + text_projection */
    node->pool.cap = total * 2 + 8;
    node->pool.src = calloc(node->pool.cap, sizeof *node->pool.src);
    if (!node->pool.src) {
        free(node);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    node->next = m->write_pools;
    m->write_pools = node;
    write_pool *pool = &node->pool;
    int rc = SD_OK;
    sd_params *regs[2] = { (parts & SD_MODEL_UNET) ? &m->unet_params : NULL,
                           (parts & SD_MODEL_VAE) ? &m->vae_params : NULL };
    for (int r = 0; r < 2 && !rc; r++) {
        if (!regs[r]) continue;
        for (size_t i = 0; i < sd_params_count(regs[r]) && !rc; i++) {
            const sd_param *p = sd_params_at(regs[r], i);
            const sd_tensor *t = &p->value;
            int64_t shape[SD_MAX_DIMS];
            int nd = t->ndim;
            memcpy(shape, t->shape, sizeof shape);
            if (is_vae_attn_matrix(p->key, t)) shape[2] = shape[3] = 1, nd = 4;   /* ldm stores 1×1 convs */
            rc = add_one(w, pool, p->key, nd, shape, &t, 1, dtype);
        }
    }
    if (rc || !(parts & SD_MODEL_TE)) return rc;
    sd_params *te = &m->te_params;
    if (m->cfg.family != SD_FAMILY_SD2) {
        /* SD1, SDXL's TE1: the registry keys are the file's */
        for (size_t i = 0; i < sd_params_count(te) && !rc; i++) {
            const sd_param *p = sd_params_at(te, i);
            const sd_tensor *t = &p->value;
            if (m->cfg.family == SD_FAMILY_SDXL && !starts(p->key, SDXL_TE1_PREFIX)) continue;
            rc = add_one(w, pool, p->key, t->ndim, t->shape, &t, 1, dtype);
        }
        /* SDXL's TE2 in OpenCLIP names; its logit_scale (unused) comes with the source's other keys */
        if (!rc && m->cfg.family == SD_FAMILY_SDXL)
            rc = add_openclip_te(w, pool, te, SDXL_TE2_PREFIX, SDXL_TE2_PREFIX, -1, 0, dtype);
        return rc;
    }
    /* SD2: OpenCLIP names (kohya convert_text_encoder_state_dict_to_sd_v2, make_dummy_weights) */
    int last_run = m->clip.n_run - 1, dummy = m->cfg.clip.layers - 1;
    rc = add_openclip_te(w, pool, te, "cond_stage_model.transformer.", "cond_stage_model.model.",
                         dummy > last_run ? last_run : -1, dummy, dtype);
    if (!rc) {
        int64_t wd = m->cfg.clip.width;
        float *ones = pool_buf(pool, (size_t)(wd * wd) * sizeof(float));
        int64_t *one = pool_buf(pool, sizeof(int64_t));
        if (!ones || !one) return sd_err(SD_ENOMEM, "out of memory");
        for (int64_t i = 0; i < wd * wd; i++) ones[i] = 1.0f;
        *one = 1;
        rc = sd_safetensors_writer_add_f32(w, "cond_stage_model.model.text_projection", dtype, 2,
                                           (const int64_t[]){ wd, wd }, ones);
        if (!rc) rc = sd_safetensors_writer_add(w, "cond_stage_model.model.logit_scale", SD_ST_I64, 0, NULL, one);
    }
    return rc;
}

int sd_model_writer_add(sd_model *m, sd_safetensors_writer *w, const char *name, const sd_tensor *t, int ndim,
                        const int64_t *shape, sd_st_dtype dtype)
{
    pool_node *node = calloc(1, sizeof *node);
    if (!node) return sd_err(SD_ENOMEM, "out of memory");
    node->pool.cap = 1;
    node->pool.src = calloc(1, sizeof *node->pool.src);
    if (!node->pool.src) {
        free(node);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    node->next = m->write_pools;
    m->write_pools = node;
    return add_one(w, &node->pool, name, ndim, shape ? shape : t->shape, &t, 1, dtype);
}
