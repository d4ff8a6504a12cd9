/* json_util.h - reading the JSON files of a HuggingFace checkpoint with cJSON. */
#ifndef Q3_JSON_UTIL_H
#define Q3_JSON_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <cjson/cJSON.h>
#include "../format/q3_format.h"

/* Read a whole file into a malloc'd buffer with a NUL after the last byte. */
int q3_read_file(const char *path, char **data, size_t *size, q3_err *err);
/* Parse len bytes of JSON text; name is used in messages. The root must be an object. */
int q3_json_parse(const char *text, size_t len, const char *name, cJSON **root, q3_err *err);
/* q3_read_file + q3_json_parse. */
int q3_json_load(const char *path, cJSON **root, q3_err *err);
/* v is a JSON number with an integer value in [lo, hi]: 0 and *out set, else -1. */
int q3_json_int(const cJSON *v, int64_t lo, int64_t hi, int64_t *out);
/* "dir/name" into out (cap bytes); -1 when it does not fit. */
int q3_path_join(char *out, size_t cap, const char *dir, const char *name);

#endif
