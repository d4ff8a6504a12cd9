/* fuzz_hf_config.c - config.json and generation_config.json loading: the input is
 * config.json, optionally followed by a NUL byte and generation_config.json.
 * What the converter accepts, the .q3 reader must accept too. */
#include "fuzz_util.h"
#include "../convert/hf_config.h"
#include "../convert/json_util.h"
#include "../format/q3_arch.h"

int fuzz_hf_config(const uint8_t *data, size_t size)
{
    const char *ctext, *gtext;
    size_t clen, glen;
    fuzz_split(data, size, &ctext, &clen, &gtext, &glen);
    q3_err err = {{0}};
    cJSON *croot = NULL, *groot = NULL;
    if (q3_json_parse(ctext, clen, "config.json", &croot, &err)) {
        fuzz_check_err(&err, "config.json");
        return 0;
    }
    q3_hf_config hc;
    if (q3_hf_config_parse(croot, "config.json", &hc, &err)) {
        fuzz_check_err(&err, "config.json");
        goto out;
    }
    uint8_t rec[Q3_CONFIG_SIZE];
    q3_config back;
    q3_encode_config(&hc.config, rec);
    FUZZ_ASSERT(q3_decode_config(rec, sizeof rec, &back, "rec", &err) == 0, "reader refuses an accepted config: %s",
                err.msg);
    FUZZ_ASSERT(hc.n_eos <= Q3_MAX_EOS, "n_eos");

    q3_tensor_spec *specs = NULL;
    uint32_t n = 0;
    if (q3_arch_tensor_specs(&q3_arch_qwen3, &hc.config, &specs, &n, &err) == 0) {
        for (uint32_t i = 0; i < n; i++)
            FUZZ_ASSERT(memchr(specs[i].name, 0, sizeof specs[i].name) && specs[i].shape[0] && specs[i].shape[1],
                        "tensor spec %u", i);
        free(specs);
    }

    if (gtext && q3_json_parse(gtext, glen, "generation_config.json", &groot, &err)) {
        fuzz_check_err(&err, "generation_config.json");
        goto out;
    }
    q3_generation g;
    if (q3_hf_generation_parse(groot, "generation_config.json", &hc, &g, &err)) {
        fuzz_check_err(&err, "generation_config.json");
        goto out;
    }
    uint8_t grec[Q3_GENERATION_SIZE];
    q3_generation gback;
    q3_encode_generation(&g, grec);
    FUZZ_ASSERT(q3_decode_generation(grec, sizeof grec, &gback, "rec", &err) == 0,
                "reader refuses accepted generation defaults: %s", err.msg);
    for (uint32_t i = 0; i < g.n_eos; i++)
        FUZZ_ASSERT(g.eos_token_ids[i] >= 0 && (uint32_t)g.eos_token_ids[i] < hc.config.vocab_size,
                    "eos id %d outside the vocab the reader checks", g.eos_token_ids[i]);
out:
    cJSON_Delete(groot);
    cJSON_Delete(croot);
    return 0;
}

FUZZ_ENTRY(fuzz_hf_config)
