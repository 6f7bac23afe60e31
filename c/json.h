/* json.h: the header's JSON (RFC 8259; json.c). dci_json_check validates the whole text once;
 * the others walk validated text, which ends in a NUL: a value is a pointer to its first
 * character. dci_is_object, dci_is_array, dci_is_string, dci_is_uint, dci_json_true and
 * dci_json_false take NULL (no value) too, and say no. */
#ifndef DC_JSON_H
#define DC_JSON_H

#include <stddef.h>
#include <stdint.h>

/* s[0..n), s[n] == 0: NULL if it is one JSON value (UTF-8, nested at most 64 deep, numbers of
 * at most DC_MAX_NUMBER_CHARS characters), else what is wrong with it. */
const char *dci_json_check(const char *s, size_t n);

int dci_is_digit(char c);
const char *dci_ws(const char *p);             /* past white space */
const char *dci_skip_string(const char *p);    /* past the string at p */
int dci_is_object(const char *v);
int dci_is_array(const char *v);
int dci_is_string(const char *v);

/* Arrays: the first element, the next one; NULL past the end. */
const char *dci_arr_first(const char *a);
const char *dci_arr_next(const char *v);
size_t dci_arr_len(const char *a);

/* Objects: members are walked by their key; dci_member_value is the value after the key's ':';
 * dci_obj_get the value of a key, the last where it repeats (as Python's json), or NULL. */
const char *dci_obj_first(const char *o);
const char *dci_obj_next(const char *key);
const char *dci_member_value(const char *key);
const char *dci_obj_get(const char *o, const char *key);

/* Strings: equal to the ASCII text lit; in code point order (<0, 0, >0); as UTF-8 in out
 * (which needs as many bytes as the string's JSON text), returning its length. */
int dci_str_eq(const char *v, const char *lit);
int dci_str_cmp(const char *a, const char *b);
size_t dci_str_decode(const char *v, char *out);

/* Numbers and literals: an integer (no fraction or exponent) of lo..hi into *out; the same
 * test without the value; true; false. */
int dci_json_int(const char *v, uint64_t lo, uint64_t hi, uint64_t *out);
int dci_is_uint(const char *v, uint64_t lo, uint64_t hi);
int dci_json_true(const char *v);
int dci_json_false(const char *v);

#endif
