# anvil — one build for the core library, the tools, tests, fuzzers and benches.
#   make            build libanvil.a and every tool into bin/
#   make test       unit suites (Criterion) + CLI golden tests; ends with "N passed, N failed"
#   make SAN=1 test the same under ASan+UBSan (objects in build-san/, tools in build-san/bin/)
#   make demo       tokenizer -> shards -> pretrain -> GGUF -> quantize -> eval -> run (scripts/demo.sh)
#   make bench      conversion throughput vs cp, info latency (docs/BENCHMARKS.md)
#   make fuzz       libFuzzer targets, FUZZ_SECONDS each (clang)
#   PORTABLE=1      no -march=native

CC      ?= cc
PREFIX  ?= /usr/local
ARCH    := $(if $(PORTABLE),-mavx2 -mf16c -mfma,-march=native)
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fopenmp $(ARCH) -Icore -MMD -MP
LDLIBS  := -ljansson -lpcre2-8 -larchive -lzstd -lopenblas -lprotobuf-c -lm -fopenmp
# ONNX: C generated at build time by protoc-c from the onnx.proto Debian ships
# (libonnx-dev, or python3-onnx's copy); never committed
ONNX_PROTO ?= $(firstword $(wildcard /usr/include/onnx/onnx.proto /usr/lib/python3/dist-packages/onnx/onnx.proto))

ifeq ($(SAN),1)
  BUILD   := build-san
  BIN     := build-san/bin
  CFLAGS  += -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
  LDFLAGS += -fsanitize=address,undefined
else
  BUILD   := build
  BIN     := bin
endif

GEN        := $(BUILD)/gen
CFLAGS     += -I$(GEN)

TOOLS      := convert info tokenizer run eval quantize train lora
CORE_SRC   := $(wildcard core/*.c)
CORE_OBJ   := $(CORE_SRC:%.c=$(BUILD)/%.o) $(GEN)/onnx.pb-c.o
LIB        := $(BUILD)/libanvil.a
TEST_SRC   := $(wildcard tests/test_*.c)
TEST_BIN   := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TOOL_BINS  := $(BIN)/anvil $(TOOLS:%=$(BIN)/anvil-%)
FUZZ_SRC   := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_SECONDS ?= 60

.PHONY: all test demo bench fuzz install clean tools tests
all: $(TOOL_BINS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# onnx.pb-c.{c,h}: one protoc-c run makes both (the .h hangs off the .c)
%/gen/onnx.pb-c.c: $(ONNX_PROTO)
	@test -n "$(ONNX_PROTO)" || { echo "onnx.proto not found: run scripts/deps.sh (libonnx-dev)" >&2; exit 1; }
	@mkdir -p $(@D)
	protoc-c --proto_path=$(dir $(ONNX_PROTO)) --c_out=$(@D) $(notdir $(ONNX_PROTO))
%/gen/onnx.pb-c.h: %/gen/onnx.pb-c.c ;
.PRECIOUS: %/gen/onnx.pb-c.c %/gen/onnx.pb-c.h
$(GEN)/onnx.pb-c.o: $(GEN)/onnx.pb-c.c $(GEN)/onnx.pb-c.h
	$(CC) $(CFLAGS) -c $< -o $@
# first build: readers of the generated header wait for it (.d files take over after)
$(filter $(BUILD)/core/onnx%.o,$(CORE_OBJ)) $(BUILD)/info/main.o $(BUILD)/convert/main.o: | $(GEN)/onnx.pb-c.h

$(LIB): $(CORE_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN)/anvil: $(BUILD)/anvil.o
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

# each tool: every .c in its folder, linked against the core library
define TOOL_RULE
$(BIN)/anvil-$(1): $(patsubst %.c,$(BUILD)/%.o,$(wildcard $(1)/*.c)) $(LIB)
	@mkdir -p $(BIN)
	$$(CC) $$(LDFLAGS) $$^ -o $$@ $$(LDLIBS)
endef
$(foreach t,$(TOOLS),$(eval $(call TOOL_RULE,$(t))))

$(BUILD)/tests/test_%: tests/test_%.c tests/testutil.h $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests $< -o $@ $(LIB) $(LDFLAGS) $(LDLIBS) $(shell pkg-config --libs criterion)

tests: $(TEST_BIN)

test: all $(TEST_BIN)
	@ANVIL_BIN=$(abspath $(BIN)) BUILD=$(BUILD) bash tests/run.sh $(TEST_BIN)

demo: all
	@bash scripts/demo.sh $(BIN)

bench: all
	@bash scripts/bench.sh $(BIN)

# libFuzzer: clang, ASan+UBSan, one binary per target, corpus in tests/fuzz/corpus/<target>
fuzz: build-fuzz/gen/onnx.pb-c.c
	@mkdir -p build-fuzz
	@set -e; for f in $(FUZZ_SRC); do n=$$(basename $$f .c); \
	  clang -std=c11 -D_GNU_SOURCE -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Icore -Ibuild-fuzz/gen \
	    $$f $(CORE_SRC) build-fuzz/gen/onnx.pb-c.c -o build-fuzz/$$n -ljansson -lpcre2-8 -larchive -lzstd -lopenblas -lprotobuf-c -lm -fopenmp; \
	  mkdir -p build-fuzz/corpus-$$n; cp -n tests/fuzz/corpus/$${n#fuzz_}/* build-fuzz/corpus-$$n/ 2>/dev/null || true; \
	  echo "== $$n for $(FUZZ_SECONDS)s"; \
	  ./build-fuzz/$$n -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -max_len=65536 \
	    build-fuzz/corpus-$$n 2>&1 | grep -E '^(#[0-9]+ +DONE|Done|==[0-9]+==ERROR|SUMMARY)' ; \
	done

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include/anvil
	install -m 755 $(TOOL_BINS) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(LIB) $(DESTDIR)$(PREFIX)/lib/
	install -m 644 core/*.h $(DESTDIR)$(PREFIX)/include/anvil/

clean:
	rm -rf build build-san build-fuzz bin

-include $(CORE_OBJ:.o=.d) $(wildcard $(BUILD)/*/*.d)
