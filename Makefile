# q3 - build everything with `make`, test with `make test`, sanitizers with `make test SAN=1`.
CC ?= gcc
OPT ?= -O2
# -fPIC: the same objects go into libq3.so; -fno-semantic-interposition keeps calls
# inside the library as direct (and inlinable) as in an executable. -fvisibility=hidden:
# libq3.so exports only what include/q3.h marks Q3_API (tests/e2e_public_api.sh).
CFLAGS_BASE = -std=c11 -D_GNU_SOURCE -g $(OPT) -Wall -Wextra -Wshadow -Wno-unused-parameter -pthread -fno-strict-aliasing \
	-fPIC -fno-semantic-interposition -fvisibility=hidden
BUILD ?= build
ifeq ($(SAN),1)
BUILD = build-san
CFLAGS_BASE += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS_SAN = -fsanitize=address,undefined
endif
CFLAGS_ALL = $(CFLAGS_BASE) $(CFLAGS)
LDLIBS = -lz -lxxhash -lcjson -lpcre2-8 -lutf8proc -lOpenCL -lm -lpthread

# SIMD variants are compiled per file; the runtime picks one after cpuid.
AVX512_FLAGS = -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16 -mfma -mf16c
AVX2_FLAGS = -mavx2 -mfma -mf16c

MAINS = convert/q3convert.c runtime/q3run.c serve/q3serve.c tools/q3check.c tools/q3info.c tools/q3synth.c tools/q3bench.c tools/q3batch.c tools/q3bandwidth.c tools/q3tokbench.c tools/q3wgmma.c
FORMAT_SRC = $(wildcard format/*.c)
CONVERT_SRC = $(filter-out $(MAINS),$(wildcard convert/*.c))
# q3run's own parts (runtime/q3run_*.c) make the program, not the library.
Q3RUN_SRC = runtime/q3run.c $(wildcard runtime/q3run_*.c)
# The part of the runtime that reads a model without running it: the tokenizer, the
# chat template, the config-to-tensors binding and the load checks built on them
# (runtime/model_check.h). q3convert and q3check run those checks, so they link it.
MODEL_SRC = $(addprefix runtime/,tokenizer.c tok_encode.c utf8.c chat_template.c weights.c model_check.c)
RUNTIME_SRC = $(filter-out $(MAINS) $(MODEL_SRC) $(Q3RUN_SRC),$(wildcard runtime/*.c) $(wildcard kernels/*.c))
# The shared constants first (kernels/qwen3_shared.h, also a C header), then qwen3.cl
# (the helpers the others use), then the rest in name order.
CL_SRC = kernels/qwen3_shared.h kernels/qwen3.cl $(filter-out kernels/qwen3.cl,$(sort $(wildcard kernels/*.cl)))
TEST_SRC = $(wildcard tests/test_*.c)
TOOL_BINS = $(patsubst %.c,$(BUILD)/%,$(notdir $(filter $(MAINS),$(wildcard $(MAINS)))))
TEST_BINS = $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
LIB_FORMAT = $(BUILD)/libq3format.a
LIB_CONVERT = $(BUILD)/libq3convert.a
LIB_MODEL = $(BUILD)/libq3model.a
LIB_RUNTIME = $(BUILD)/libq3runtime.a
CL_EMBED = $(BUILD)/gen/cl_sources.c

all: $(TOOL_BINS) $(TEST_BINS) $(LIB_Q3)

# Objects are rebuilt when the flags change (a build folder made before -fvisibility
# would otherwise keep exporting everything): a stamp rewritten only when they differ.
FLAGS_STAMP = $(BUILD)/cflags
$(FLAGS_STAMP): FORCE
	@mkdir -p $(dir $@)
	@echo '$(CC) $(CFLAGS_ALL)' | cmp -s - $@ || echo '$(CC) $(CFLAGS_ALL)' >$@
FORCE:

$(BUILD)/obj/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -MMD -MP -c $< -o $@
$(BUILD)/obj/kernels/cpu_avx512%.o: kernels/cpu_avx512%.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(AVX512_FLAGS) -MMD -MP -c $< -o $@
$(BUILD)/obj/kernels/cpu_avx2%.o: kernels/cpu_avx2%.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(AVX2_FLAGS) -MMD -MP -c $< -o $@

# OpenCL C sources are embedded as strings at build time.
$(BUILD)/embed_cl: tools/embed_cl.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -O1 -Wall -Wextra $< -o $@
$(CL_EMBED): $(BUILD)/embed_cl $(CL_SRC)
	@mkdir -p $(dir $@)
	$(BUILD)/embed_cl $@ $(CL_SRC)

# Archives are rebuilt from scratch: `ar r` alone keeps members whose source moved
# to another library.
$(LIB_FORMAT): $(call obj,$(FORMAT_SRC))
	rm -f $@ && ar rcs $@ $^
$(LIB_CONVERT): $(call obj,$(CONVERT_SRC))
	rm -f $@ && ar rcs $@ $^
$(LIB_MODEL): $(call obj,$(MODEL_SRC))
	rm -f $@ && ar rcs $@ $^
$(LIB_RUNTIME): $(call obj,$(RUNTIME_SRC)) $(BUILD)/obj/gen/cl_sources.o
	rm -f $@ && ar rcs $@ $^
$(BUILD)/obj/gen/cl_sources.o: $(CL_EMBED) $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

ALL_LIBS = $(LIB_RUNTIME) $(LIB_CONVERT) $(LIB_MODEL) $(LIB_FORMAT)
# What the conversion-side tools and tests link: no backend, no kernels.
CONVERT_LIBS = $(LIB_CONVERT) $(LIB_MODEL) $(LIB_FORMAT)
# The library programs link against (include/q3.h): the format reader and the runtime.
LIB_Q3 = $(BUILD)/libq3.a $(BUILD)/libq3.so
LIB_Q3_OBJS = $(call obj,$(FORMAT_SRC) $(MODEL_SRC) $(RUNTIME_SRC)) $(BUILD)/obj/gen/cl_sources.o
# Raised when a program built against the old include/q3.h would misbehave with the new
# library: 2 when q3_context_params gained cache_type (a larger struct read by the library).
Q3_SOVERSION = 2
$(BUILD)/libq3.a: $(LIB_Q3_OBJS)
	rm -f $@
	ar rcs $@ $^
# -Bsymbolic-functions: the library's calls to its own public functions stay direct.
$(BUILD)/libq3.so: $(LIB_Q3_OBJS)
	$(CC) -shared $(LDFLAGS_SAN) -pthread -Wl,-soname,libq3.so.$(Q3_SOVERSION) -Wl,-Bsymbolic-functions $^ $(LDLIBS) -o $@
# The name programs linked against it look for (its soname), beside it in the build.
$(BUILD)/libq3.so.$(Q3_SOVERSION): $(BUILD)/libq3.so
	ln -sf libq3.so $@

# make install PREFIX=...: the header, both libraries and q3.pc for pkg-config.
PREFIX ?= /usr/local
install: $(LIB_Q3) q3.pc.in
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 include/q3.h $(DESTDIR)$(PREFIX)/include/q3.h
	install -m 644 $(BUILD)/libq3.a $(DESTDIR)$(PREFIX)/lib/libq3.a
	install -m 755 $(BUILD)/libq3.so $(DESTDIR)$(PREFIX)/lib/libq3.so.$(Q3_SOVERSION)
	ln -sf libq3.so.$(Q3_SOVERSION) $(DESTDIR)$(PREFIX)/lib/libq3.so
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBS@|$(LDLIBS)|' q3.pc.in >$(DESTDIR)$(PREFIX)/lib/pkgconfig/q3.pc

# examples/ built as a user builds them: against the installed library, through
# pkg-config, from a prefix inside the build folder (make test runs them).
EXAMPLES_PREFIX = $(abspath $(BUILD))/prefix
EXAMPLE_BINS = $(patsubst examples/%.c,$(BUILD)/examples/%,$(wildcard examples/*.c))
$(EXAMPLES_PREFIX)/lib/pkgconfig/q3.pc: $(LIB_Q3) include/q3.h q3.pc.in
	$(MAKE) --no-print-directory install PREFIX=$(EXAMPLES_PREFIX)
$(BUILD)/examples/%: examples/%.c $(EXAMPLES_PREFIX)/lib/pkgconfig/q3.pc
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -O2 -Wall -Wextra -Werror $(filter -fsanitize%,$(CFLAGS_BASE)) $< \
	  $$(PKG_CONFIG_PATH=$(EXAMPLES_PREFIX)/lib/pkgconfig pkg-config --cflags --libs q3) \
	  -Wl,-rpath,$(EXAMPLES_PREFIX)/lib -o $@
examples: $(EXAMPLE_BINS)

$(BUILD)/q3convert: $(call obj,convert/q3convert.c) $(CONVERT_LIBS)
	$(CC) $(LDFLAGS_SAN) -pthread $^ $(LDLIBS) -o $@
$(BUILD)/%: $(BUILD)/obj/tools/%.o $(ALL_LIBS)
	$(CC) $(LDFLAGS_SAN) -pthread $^ $(LDLIBS) -o $@
# q3run, q3bench, q3batch and q3serve are on include/q3.h alone: they link libq3.so, which
# exports nothing else, so a call into the internals would not link. $ORIGIN: the
# library is found beside them, in the build folder.
ON_LIBQ3 = $(BUILD)/libq3.so $(BUILD)/libq3.so.$(Q3_SOVERSION)
LINK_LIBQ3 = -L$(BUILD) -lq3 -Wl,-rpath,'$$ORIGIN'
$(BUILD)/q3run: $(call obj,$(Q3RUN_SRC)) $(ON_LIBQ3)
	$(CC) $(LDFLAGS_SAN) -pthread $(filter %.o,$^) $(LINK_LIBQ3) -o $@
# q3bench's pure helpers (list parsing, top-2, messages) are linked into it and into their test.
BENCH_FMT = $(call obj,tools/bench_fmt.c)
$(BUILD)/q3bench: $(call obj,tools/q3bench.c) $(BENCH_FMT) $(ON_LIBQ3)
	$(CC) $(LDFLAGS_SAN) -pthread $(filter %.o,$^) $(LINK_LIBQ3) -lcjson -lxxhash -lm -o $@
$(BUILD)/tests/test_bench: $(BENCH_FMT)
# q3batch: the batched decode step alone, on the library (its list parsing is q3bench's).
$(BUILD)/q3batch: $(call obj,tools/q3batch.c) $(BENCH_FMT) $(ON_LIBQ3)
	$(CC) $(LDFLAGS_SAN) -pthread $(filter %.o,$^) $(LINK_LIBQ3) -o $@
# q3serve (serve/): built on the library alone (include/q3.h, libq3.so), with libmicrohttpd.
# Its parts are serve/serve_*.c; the request parser, the stop matcher and the response
# objects are also linked into their unit test, the parser into the fuzz replay.
SERVE_SRC = $(wildcard serve/serve_*.c)
$(BUILD)/q3serve: $(call obj,serve/q3serve.c $(SERVE_SRC)) $(ON_LIBQ3)
	$(CC) $(LDFLAGS_SAN) -pthread $(filter %.o,$^) $(LINK_LIBQ3) -lmicrohttpd -lcjson -lm -o $@
# Its own recipe: the serve objects come before the library they call.
$(BUILD)/tests/test_serve: $(BUILD)/obj/tests/test_serve.o $(call obj,$(filter-out serve/serve_http.c,$(SERVE_SRC))) $(BUILD)/libq3.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_SAN) -pthread $^ $(LDLIBS) -lcmocka -o $@
$(BUILD)/tests/test_fuzz_replay: $(call obj,serve/serve_request.c)
# The conversion-side tools need only the format, convert and model libraries.
CONVERT_TOOLS = $(BUILD)/q3check $(BUILD)/q3info $(BUILD)/q3synth
$(CONVERT_TOOLS): $(BUILD)/%: $(BUILD)/obj/tools/%.o $(CONVERT_LIBS)
	$(CC) $(LDFLAGS_SAN) -pthread $^ $(LDLIBS) -o $@

# Tests named test_format* / test_convert* need only the conversion-side
# libraries, so they build while the backends are being worked on.
LIGHT_TESTS = $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/test_format*.c tests/test_convert*.c))
$(LIGHT_TESTS): $(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(CONVERT_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_SAN) -pthread $^ $(LDLIBS) -lcmocka -o $@
$(filter-out $(LIGHT_TESTS) $(BUILD)/tests/test_serve,$(TEST_BINS)): $(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(ALL_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_SAN) -pthread $^ $(LDLIBS) -lcmocka -o $@

# Fixtures unpacked from tests/fixtures (the repo carries them; nothing is downloaded).
FIXTURES = $(BUILD)/fixtures
$(FIXTURES)/.unpacked: $(wildcard tests/fixtures/*.tar.gz) tests/fixtures/tokenizer.json.gz
	@mkdir -p $(FIXTURES)
	for t in tests/fixtures/*.tar.gz; do tar -xzf $$t -C $(FIXTURES); done
	gzip -dc tests/fixtures/tokenizer.json.gz > $(FIXTURES)/tokenizer.json
	touch $@
fixtures: $(FIXTURES)/.unpacked

# The default demo model: demo-tiny, converted at build time.
DEMO = $(BUILD)/demo-tiny.q3
$(DEMO): $(BUILD)/q3convert $(FIXTURES)/.unpacked
	$(BUILD)/q3convert $(FIXTURES)/demo-tiny -o $@
model: $(DEMO)

demo: $(TOOL_BINS) $(DEMO)
	$(BUILD)/q3check $(DEMO)
	@if [ -x $(BUILD)/q3run ]; then $(BUILD)/q3run $(DEMO) "The GNU General Public License" -n 48 --temp 0; fi

# Models the tests run: the HF-written fixtures converted, and the synthetic
# checkpoints generated from their recipe (tools/q3synth) with the tokenizer beside.
MODELS = $(BUILD)/models
HF_MODELS = demo-tiny hf-tiny hf-tiny-f32
SYN_MODELS = syn-a syn-b
TEST_MODELS = $(patsubst %,$(MODELS)/%.q3,$(HF_MODELS) $(SYN_MODELS))
$(patsubst %,$(MODELS)/%.q3,$(HF_MODELS)): $(MODELS)/%.q3: $(BUILD)/q3convert $(FIXTURES)/.unpacked
	@mkdir -p $(MODELS)
	$(BUILD)/q3convert -q $(FIXTURES)/$* -o $@
$(patsubst %,$(MODELS)/%.q3,$(SYN_MODELS)): $(MODELS)/%.q3: $(BUILD)/q3convert $(BUILD)/q3synth $(FIXTURES)/.unpacked tests/fixtures/configs/%.json
	@mkdir -p $(MODELS)/$*
	$(BUILD)/q3synth tests/fixtures/configs/$*.json $(MODELS)/$*
	cp $(FIXTURES)/tokenizer.json tests/fixtures/tokenizer_config.json $(MODELS)/$*/
	$(BUILD)/q3convert -q $(MODELS)/$* -o $@
	rm -f $(MODELS)/$*/model.safetensors
models: $(TEST_MODELS)

test: all $(DEMO) $(TEST_MODELS) $(EXAMPLE_BINS)
	LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp BUILD=$(BUILD) tests/run_tests.sh

clean:
	rm -rf build build-san

.PHONY: all test demo model models fixtures clean install examples FORCE
.SECONDARY:
-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# ---- fuzzing (libFuzzer, clang): `make fuzz` builds $(FUZZ_BUILD)/fuzz_* and runs each
# for FUZZ_TIME seconds from its seed corpus fuzz/corpus/NAME; crashes land in
# $(FUZZ_BUILD)/crashes/NAME (keep them as fuzz/regressions/NAME). `make fuzz-build`
# only builds. tests/test_fuzz_replay.c replays the corpora in `make test`.
FUZZ_BUILD = build-fuzz
FUZZ_TIME ?= 60
FUZZ_MAXLEN ?= 24576
FUZZ_SAN = -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_BINS = $(patsubst fuzz/%.c,$(FUZZ_BUILD)/%,$(wildcard fuzz/fuzz_*.c))
fuzz-build:
	$(MAKE) BUILD=$(FUZZ_BUILD) CC=clang OPT=-O1 CFLAGS="$(FUZZ_SAN) -fsanitize=fuzzer-no-link" $(FUZZ_BINS)
# clang ignores `#pragma GCC target`: the AMX file gets its flags on the command line.
$(FUZZ_BUILD)/obj/kernels/cpu_avx512_amx.o: AVX512_FLAGS += -mamx-tile -mamx-bf16
$(FUZZ_BUILD)/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz_util.h $(ALL_LIBS)
	$(CC) $(CFLAGS_BASE) $(FUZZ_SAN) -fsanitize=fuzzer $< $(ALL_LIBS) $(LDLIBS) -o $@
$(FUZZ_BUILD)/fuzz_serve_request: fuzz/fuzz_serve_request.c fuzz/fuzz_util.h serve/serve_request.c
	$(CC) $(CFLAGS_BASE) $(FUZZ_SAN) -fsanitize=fuzzer $< serve/serve_request.c $(LDLIBS) -o $@
fuzz: fuzz-build $(FIXTURES)/.unpacked
	@for t in $(FUZZ_BINS); do n=$$(basename $$t); n=$${n#fuzz_}; mkdir -p $(FUZZ_BUILD)/corpus/$$n $(FUZZ_BUILD)/crashes/$$n; \
	  echo "== $$n ($(FUZZ_TIME) s)"; \
	  $$t -max_total_time=$(FUZZ_TIME) -max_len=$(FUZZ_MAXLEN) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	    -artifact_prefix=$(FUZZ_BUILD)/crashes/$$n/ $(FUZZ_BUILD)/corpus/$$n fuzz/corpus/$$n || exit 1; done
.PHONY: fuzz fuzz-build
