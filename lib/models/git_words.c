/* kohya's make_captions_by_git.py --remove_words (see git.h): its PATTERN_REPLACE list, applied in
 * order with re.sub(pat, "", caption). A small backtracking regex machine with Python re's
 * semantics for the constructs those patterns use: literals, ( | ) groups (alternatives tried
 * left to right), greedy ? + *, \w, \d and [^c]; leftmost match, scanning on after each
 * (non-empty) match. Works on code points (UTF-8; a stray byte stands for itself). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "models/git.h"

/* kohya-ss/sd-scripts finetune/make_captions_by_git.py PATTERN_REPLACE, in its order */
static const char *const patterns[] = {
    "(has|with|and) the (words?|letters?|name) (\" ?[^\"]*\"|\\w+)( ?(is )?(on|in) (the |her |their |him )?\\w+)?",
    "(with a sign )?that says ?(\" ?[^\"]*\"|\\w+)( ?on it)?",
    "(with a sign )?that says ?(' ?(i'm)?[^']*'|\\w+)( ?on it)?",
    "with the number \\d+ on (it|\\w+ \\w+)",
    "with the words \"",
    "word \\w+ on it",
    "that says the word \\w+ on it",
    "that says'the word \"( on it)?",
};

enum { N_LIT, N_WORD, N_DIGIT, N_NOT, N_CAT, N_ALT, N_QUEST, N_PLUS, N_STAR, N_EMPTY };
typedef struct node { int type, c, l, r; } node;
enum { I_CHAR, I_WORD, I_DIGIT, I_NOT, I_SPLIT, I_JMP, I_MATCH };
typedef struct inst { int op, c, x, y; } inst;

#define MAXN 256
typedef struct prog {
    node nd[MAXN];
    int nn;
    inst code[MAXN * 2];
    int nc;
    const char *p;
} prog;

static int mk(prog *g, int type, int c, int l, int r)
{
    if (g->nn >= MAXN) return -1;
    g->nd[g->nn] = (node){ type, c, l, r };
    return g->nn++;
}

static int p_alt(prog *g);

static int p_atom(prog *g)
{
    const char *p = g->p;
    if (*p == '(') {
        g->p++;
        int e = p_alt(g);
        if (*g->p == ')') g->p++;
        return e;
    }
    if (*p == '\\') {
        g->p += 2;
        return mk(g, p[1] == 'w' ? N_WORD : p[1] == 'd' ? N_DIGIT : N_LIT, (unsigned char)p[1], -1, -1);
    }
    if (p[0] == '[' && p[1] == '^') {   /* [^c] */
        g->p += 4;
        return mk(g, N_NOT, (unsigned char)p[2], -1, -1);
    }
    g->p++;
    return mk(g, N_LIT, (unsigned char)*p, -1, -1);
}

static int p_cat(prog *g)
{
    int e = -1;
    while (*g->p && *g->p != '|' && *g->p != ')') {
        int a = p_atom(g);
        if (*g->p == '?' || *g->p == '+' || *g->p == '*') {
            a = mk(g, *g->p == '?' ? N_QUEST : *g->p == '+' ? N_PLUS : N_STAR, 0, a, -1);
            g->p++;
        }
        e = e < 0 ? a : mk(g, N_CAT, 0, e, a);
    }
    return e < 0 ? mk(g, N_EMPTY, 0, -1, -1) : e;
}

static int p_alt(prog *g)
{
    int e = p_cat(g);
    if (*g->p == '|') {
        g->p++;
        e = mk(g, N_ALT, 0, e, p_alt(g));
    }
    return e;
}

static int emit(prog *g, int op, int c)
{
    g->code[g->nc] = (inst){ op, c, 0, 0 };
    return g->nc++;
}

static void gen(prog *g, int e)
{
    const node *n = &g->nd[e];
    int s, j;
    switch (n->type) {
    case N_LIT: emit(g, I_CHAR, n->c); break;
    case N_WORD: emit(g, I_WORD, 0); break;
    case N_DIGIT: emit(g, I_DIGIT, 0); break;
    case N_NOT: emit(g, I_NOT, n->c); break;
    case N_EMPTY: break;
    case N_CAT: gen(g, n->l); gen(g, n->r); break;
    case N_ALT:
        s = emit(g, I_SPLIT, 0);
        g->code[s].x = g->nc;
        gen(g, n->l);
        j = emit(g, I_JMP, 0);
        g->code[s].y = g->nc;
        gen(g, n->r);
        g->code[j].x = g->nc;
        break;
    case N_QUEST:
        s = emit(g, I_SPLIT, 0);
        g->code[s].x = g->nc;
        gen(g, n->l);
        g->code[s].y = g->nc;
        break;
    case N_PLUS: {
        int l1 = g->nc;
        gen(g, n->l);
        s = emit(g, I_SPLIT, 0);
        g->code[s].x = l1;
        g->code[s].y = g->nc;
        break;
    }
    case N_STAR: {
        s = emit(g, I_SPLIT, 0);
        g->code[s].x = g->nc;
        gen(g, n->l);
        j = emit(g, I_JMP, 0);
        g->code[j].x = s;
        g->code[s].y = g->nc;
        break;
    }
    }
}

static int compile(prog *g, const char *pat)
{
    g->nn = g->nc = 0;
    g->p = pat;
    int e = p_alt(g);
    if (e < 0 || g->nn >= MAXN) return -1;
    gen(g, e);
    emit(g, I_MATCH, 0);
    return 0;
}

/* Python's \w on a code point: ASCII alphanumerics and _, and non-ASCII code points outside the
 * punctuation/symbol blocks (an approximation of str.isalnum) */
static int is_word(uint32_t c)
{
    if (c < 128) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (c <= 0xBF)
        return c == 0xAA || c == 0xB2 || c == 0xB3 || c == 0xB5 || c == 0xB9 || c == 0xBA || (c >= 0xBC && c <= 0xBE);
    if (c == 0xD7 || c == 0xF7) return 0;
    if (c >= 0x2000 && c <= 0x2BFF) return 0;
    if (c >= 0x3000 && c <= 0x303F) return 0;
    if (c >= 0xFF00 && c <= 0xFF0F) return 0;
    if ((c >= 0xFF1A && c <= 0xFF20) || (c >= 0xFF3B && c <= 0xFF40) || (c >= 0xFF5B && c <= 0xFF65)) return 0;
    return 1;
}

static int run(const inst *code, int pc, const uint32_t *s, int n, int sp, int *end)
{
    for (;;) {
        const inst *in = &code[pc];
        switch (in->op) {
        case I_CHAR:
            if (sp < n && s[sp] == (uint32_t)in->c) { pc++; sp++; continue; }
            return 0;
        case I_WORD:
            if (sp < n && is_word(s[sp])) { pc++; sp++; continue; }
            return 0;
        case I_DIGIT:
            if (sp < n && s[sp] >= '0' && s[sp] <= '9') { pc++; sp++; continue; }
            return 0;
        case I_NOT:
            if (sp < n && s[sp] != (uint32_t)in->c) { pc++; sp++; continue; }
            return 0;
        case I_SPLIT:
            if (run(code, in->x, s, n, sp, end)) return 1;
            pc = in->y;
            continue;
        case I_JMP: pc = in->x; continue;
        default: *end = sp; return 1;
        }
    }
}

/* decode UTF-8 into code points with their byte offsets (off[n] = length) */
static int decode(const char *str, uint32_t **cps, size_t **offs)
{
    size_t L = strlen(str), n = 0, i = 0;
    uint32_t *cp = malloc(sizeof *cp * (L + 1));
    size_t *off = malloc(sizeof *off * (L + 1));
    if (!cp || !off) {
        free(cp);
        free(off);
        return -1;
    }
    const unsigned char *u = (const unsigned char *)str;
    while (i < L) {
        uint32_t c = u[i];
        int k = c >= 0xF0 && c < 0xF8 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
        if (c >= 0xF8) k = 0;
        int ok = k > 0 && i + (size_t)k < L + 1;
        for (int j = 1; ok && j <= k; j++) ok = i + (size_t)j < L && (u[i + j] & 0xC0) == 0x80;
        off[n] = i;
        if (ok) {
            c &= 0x3Fu >> k;
            for (int j = 1; j <= k; j++) c = (c << 6) | (u[i + j] & 0x3F);
            i += (size_t)k + 1;
        } else {
            i++;
        }
        cp[n++] = c;
    }
    off[n] = L;
    *cps = cp;
    *offs = off;
    return (int)n;
}

static char *sub_one(const prog *g, const char *str)
{
    uint32_t *cp;
    size_t *off;
    int n = decode(str, &cp, &off);
    if (n < 0) return NULL;
    char *out = malloc(strlen(str) + 1);
    if (out) {
        size_t o = 0;
        int sp = 0;
        while (sp < n) {
            int end;
            if (run(g->code, 0, cp, n, sp, &end) && end > sp) {
                sp = end;
                continue;
            }
            memcpy(out + o, str + off[sp], off[sp + 1] - off[sp]);
            o += off[sp + 1] - off[sp];
            sp++;
        }
        out[o] = 0;
    }
    free(cp);
    free(off);
    return out;
}

char *sd_git_remove_words(const char *caption)
{
    prog *g = malloc(sizeof *g);
    char *cur = strdup(caption);
    if (!g || !cur) {
        free(g);
        free(cur);
        return NULL;
    }
    for (size_t i = 0; i < sizeof patterns / sizeof patterns[0] && cur; i++) {
        char *next = NULL;
        if (compile(g, patterns[i]) == 0) next = sub_one(g, cur);
        free(cur);
        cur = next;
    }
    free(g);
    return cur;
}
