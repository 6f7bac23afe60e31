/* json.c: JSON (RFC 8259), the reader's parser of the header text (json.h).
 *
 * dci_json_check validates the whole header text once (UTF-8, syntax, nesting); the functions
 * after it walk the validated text, which ends in a NUL that no valid JSON holds.
 */
#include "json.h"

#include "dc.h"

#include <string.h>

#define MAX_DEPTH 64                     /* nesting of the header's JSON */

static int utf8_check(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        unsigned len, k;
        uint8_t lo = 0x80, hi = 0xbf;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            len = 2;
        else if (c >= 0xe0 && c <= 0xef) {
            len = 3;
            if (c == 0xe0)
                lo = 0xa0;                   /* no overlong forms */
            if (c == 0xed)
                hi = 0x9f;                   /* no surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4;
            if (c == 0xf0)
                lo = 0x90;
            if (c == 0xf4)
                hi = 0x8f;                   /* nothing past U+10FFFF */
        } else
            return 0;
        if (n - i < len)
            return 0;
        for (k = 1; k < len; k++) {
            uint8_t b = p[i + k];
            if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xbf))
                return 0;
        }
        i += len;
    }
    return 1;
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int dci_is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A string at s[*i] == '"': moves *i past it; 0 if malformed. */
static int json_check_string(const char *s, size_t n, size_t *i)
{
    size_t j = *i + 1;
    for (;;) {
        unsigned char c;
        if (j >= n)
            return 0;
        c = (unsigned char)s[j];
        if (c == '"')
            break;
        if (c < 0x20)
            return 0;                        /* control characters must be escaped */
        if (c == '\\') {
            if (++j >= n)
                return 0;
            c = (unsigned char)s[j];
            if (c == 'u') {
                unsigned k;
                if (n - j < 5)
                    return 0;
                for (k = 1; k <= 4; k++)
                    if (hex_value(s[j + k]) < 0)
                        return 0;
                j += 4;
            } else if (!strchr("\"\\/bfnrt", c) || c == 0)
                return 0;
        }
        j++;
    }
    *i = j + 1;
    return 1;
}

/* A number (-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][-+]?[0-9]+)?) or true, false, null. */
static int json_check_scalar(const char *s, size_t n, size_t *i)
{
    size_t j = *i, start;
    static const char *const words[] = {"true", "false", "null"};
    unsigned w;
    for (w = 0; w < 3; w++) {
        size_t len = strlen(words[w]);
        if (n - j >= len && memcmp(s + j, words[w], len) == 0) {
            *i = j + len;
            return 1;
        }
    }
    if (j < n && s[j] == '-')
        j++;
    if (j >= n || !dci_is_digit(s[j]))
        return 0;
    start = *i;
    if (s[j] == '0')
        j++;
    else
        while (j < n && dci_is_digit(s[j]))
            j++;
    if (j < n && s[j] == '.') {
        if (++j >= n || !dci_is_digit(s[j]))
            return 0;
        while (j < n && dci_is_digit(s[j]))
            j++;
    }
    if (j < n && (s[j] == 'e' || s[j] == 'E')) {
        j++;
        if (j < n && (s[j] == '+' || s[j] == '-'))
            j++;
        if (j >= n || !dci_is_digit(s[j]))
            return 0;
        while (j < n && dci_is_digit(s[j]))
            j++;
    }
    if (j - start > DC_MAX_NUMBER_CHARS)      /* docs/FORMAT.md: numbers of 40 characters */
        return 0;
    *i = j;
    return 1;
}

/* The whole text: one JSON value, nested at most MAX_DEPTH deep, without recursion.
 * 0 if valid, else a reason. */
const char *dci_json_check(const char *s, size_t n)
{
    enum { VALUE, VALUE_OR_CLOSE, KEY, KEY_OR_CLOSE, AFTER } state = VALUE;
    char stack[MAX_DEPTH];                   /* '{' or '[' of each open container */
    unsigned depth = 0;
    size_t i = 0;
    if (!utf8_check((const uint8_t *)s, n))
        return "it is not UTF-8";
    for (;;) {
        while (i < n && is_ws(s[i]))
            i++;
        if (state == AFTER && depth == 0)
            return i == n ? NULL : "extra data after the value";
        if (i >= n)
            return "it ends early";
        switch (state) {
        case VALUE:
        case VALUE_OR_CLOSE:
            if (state == VALUE_OR_CLOSE && s[i] == ']') {
                depth--;
                i++;
                state = AFTER;
            } else if (s[i] == '{' || s[i] == '[') {
                if (depth == MAX_DEPTH)
                    return "it nests deeper than 64 levels";
                stack[depth++] = s[i];
                state = s[i] == '{' ? KEY_OR_CLOSE : VALUE_OR_CLOSE;
                i++;
            } else if (s[i] == '"') {
                if (!json_check_string(s, n, &i))
                    return "a malformed string";
                state = AFTER;
            } else {
                if (!json_check_scalar(s, n, &i))
                    return "an invalid value";
                state = AFTER;
            }
            break;
        case KEY:
        case KEY_OR_CLOSE:
            if (state == KEY_OR_CLOSE && s[i] == '}') {
                depth--;
                i++;
                state = AFTER;
                break;
            }
            if (s[i] != '"' || !json_check_string(s, n, &i))
                return "an object key that is not a string";
            while (i < n && is_ws(s[i]))
                i++;
            if (i >= n || s[i] != ':')
                return "a key without ':'";
            i++;
            state = VALUE;
            break;
        case AFTER:
            if (s[i] == ',') {
                state = stack[depth - 1] == '{' ? KEY : VALUE;
                i++;
            } else if (s[i] == (stack[depth - 1] == '{' ? '}' : ']')) {
                depth--;
                i++;
            } else
                return "a missing ',' or bracket";
            break;
        }
    }
}

/* Walking validated text. A value is a pointer to its first character. */

const char *dci_ws(const char *p)
{
    while (is_ws(*p))
        p++;
    return p;
}

const char *dci_skip_string(const char *p)
{
    for (p++; *p != '"'; p++)
        if (*p == '\\')
            p++;
    return p + 1;
}

static const char *skip_value(const char *p)
{
    int depth = 0;
    if (*p == '"')
        return dci_skip_string(p);
    if (*p != '{' && *p != '[') {
        while (*p && !is_ws(*p) && *p != ',' && *p != ']' && *p != '}')
            p++;
        return p;
    }
    do {
        if (*p == '"') {
            p = dci_skip_string(p);
            continue;
        }
        if (*p == '{' || *p == '[')
            depth++;
        else if (*p == '}' || *p == ']')
            depth--;
        p++;
    } while (depth > 0);
    return p;
}

int dci_is_object(const char *v) { return v && *v == '{'; }
int dci_is_array(const char *v) { return v && *v == '['; }
int dci_is_string(const char *v) { return v && *v == '"'; }

/* Arrays: the first element, the next one; NULL past the end. */
const char *dci_arr_first(const char *a)
{
    const char *p = dci_ws(a + 1);
    return *p == ']' ? NULL : p;
}

const char *dci_arr_next(const char *v)
{
    const char *p = dci_ws(skip_value(v));
    return *p == ',' ? dci_ws(p + 1) : NULL;
}

size_t dci_arr_len(const char *a)
{
    size_t n = 0;
    const char *v;
    for (v = dci_arr_first(a); v; v = dci_arr_next(v))
        n++;
    return n;
}

/* Objects: members are walked by their key (a string); dci_member_value is after its ':'. */
const char *dci_obj_first(const char *o)
{
    const char *p = dci_ws(o + 1);
    return *p == '"' ? p : NULL;
}

const char *dci_member_value(const char *key)
{
    return dci_ws(dci_ws(dci_skip_string(key)) + 1);
}

const char *dci_obj_next(const char *key)
{
    const char *p = dci_ws(skip_value(dci_member_value(key)));
    return *p == ',' ? dci_ws(p + 1) : NULL;
}

static int hex4(const char *p)
{
    return hex_value(p[0]) << 12 | hex_value(p[1]) << 8 | hex_value(p[2]) << 4 | hex_value(p[3]);
}

/* The next code point of a string (*pp inside its quotes), or -1 at the closing quote.
 * Escaped surrogate pairs combine; a lone escaped surrogate is its own code point. */
static long str_next(const char **pp)
{
    const unsigned char *p = (const unsigned char *)*pp;
    long c;
    if (*p == '"')
        return -1;
    if (*p == '\\') {
        switch (p[1]) {
        case 'b': c = 8; break;
        case 'f': c = 12; break;
        case 'n': c = 10; break;
        case 'r': c = 13; break;
        case 't': c = 9; break;
        case 'u': c = hex4((const char *)p + 2); break;
        default: c = p[1]; break;             /* " \ / */
        }
        p += p[1] == 'u' ? 6 : 2;
        if (c >= 0xd800 && c < 0xdc00 && p[0] == '\\' && p[1] == 'u') {
            long lo = hex4((const char *)p + 2);
            if (lo >= 0xdc00 && lo < 0xe000) {
                c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
                p += 6;
            }
        }
    } else if (*p < 0x80) {
        c = *p++;
    } else {                                   /* validated UTF-8 */
        unsigned len = *p >= 0xf0 ? 4 : *p >= 0xe0 ? 3 : 2, k;
        c = *p & (0x7f >> len);
        for (k = 1; k < len; k++)
            c = c << 6 | (p[k] & 0x3f);
        p += len;
    }
    *pp = (const char *)p;
    return c;
}

/* The string value v equals the ASCII text lit. */
int dci_str_eq(const char *v, const char *lit)
{
    const char *p = v + 1;
    for (;; lit++) {
        long c = str_next(&p);
        if (c < 0)
            return *lit == 0;
        if (*lit == 0 || c != (unsigned char)*lit)
            return 0;
    }
}

/* Code point order (as Python compares str): <0, 0, >0. */
int dci_str_cmp(const char *a, const char *b)
{
    const char *p = a + 1, *q = b + 1;
    for (;;) {
        long x = str_next(&p), y = str_next(&q);
        if (x != y)
            return x < y ? -1 : 1;
        if (x < 0)
            return 0;
    }
}

/* The string value v as UTF-8 in out (lone surrogates as 3 bytes, which keeps the order);
 * returns its length. out needs as many bytes as the string's JSON text. */
size_t dci_str_decode(const char *v, char *out)
{
    const char *p = v + 1;
    size_t n = 0;
    long c;
    while ((c = str_next(&p)) >= 0) {
        if (c < 0x80)
            out[n++] = (char)c;
        else if (c < 0x800) {
            out[n++] = (char)(0xc0 | c >> 6);
            out[n++] = (char)(0x80 | (c & 0x3f));
        } else if (c < 0x10000) {
            out[n++] = (char)(0xe0 | c >> 12);
            out[n++] = (char)(0x80 | (c >> 6 & 0x3f));
            out[n++] = (char)(0x80 | (c & 0x3f));
        } else {
            out[n++] = (char)(0xf0 | c >> 18);
            out[n++] = (char)(0x80 | (c >> 12 & 0x3f));
            out[n++] = (char)(0x80 | (c >> 6 & 0x3f));
            out[n++] = (char)(0x80 | (c & 0x3f));
        }
    }
    return n;
}

/* The member of object o with key `key`; the last one where the key repeats, as Python's
 * json reads it. NULL if none. */
const char *dci_obj_get(const char *o, const char *key)
{
    const char *k, *v = NULL;
    for (k = dci_obj_first(o); k; k = dci_obj_next(k))
        if (dci_str_eq(k, key))
            v = dci_member_value(k);
    return v;
}

/* An integer (no fraction or exponent) of lo..hi: JSON's -0 is 0; values past 2^64 - 1 are
 * taken as 2^64 - 1, past every bound of the format. */
int dci_json_int(const char *v, uint64_t lo, uint64_t hi, uint64_t *out)
{
    const char *p = v;
    uint64_t x = 0;
    int neg = 0;
    if (*p == '-') {
        neg = 1;
        p++;
    }
    if (!dci_is_digit(*p))
        return 0;
    for (; dci_is_digit(*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        x = x > (UINT64_MAX - d) / 10 ? UINT64_MAX : x * 10 + d;
    }
    if (*p == '.' || *p == 'e' || *p == 'E' || (neg && x != 0) || x < lo || x > hi)
        return 0;
    *out = x;
    return 1;
}

int dci_is_uint(const char *v, uint64_t lo, uint64_t hi)
{
    uint64_t x;
    return v && dci_json_int(v, lo, hi, &x);
}

int dci_json_true(const char *v) { return v && strncmp(v, "true", 4) == 0; }
int dci_json_false(const char *v) { return v && strncmp(v, "false", 5) == 0; }
