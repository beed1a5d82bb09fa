# sd-* — non-recursive build.
#
#   make                 build build/libsd.a and build/bin/sd-*
#   make check           build and run every test (tests/run)
#   make check SAN=1     the same under ASan+UBSan (objects in build/san/)
#   make CUDA=1          also compile lib/tensor/cuda/*.cu with nvcc (objects in build/cuda/)
#   make fuzz            build the libFuzzer targets with clang and run each FUZZ_SECONDS
#   make bench           run the benchmarks in bench/
#   make deps            install the Debian packages the build and tests need (apt-get)
#   make install PREFIX=/usr/local [DESTDIR=…]
#
# Every .c under lib/<layer>/ goes into libsd, every bin/sd-*.c becomes a tool, every
# tests/{unit,grad,golden,parity}/*.c becomes a test program, and every tests/emu/*.cpp one built
# with $(CXX) (g++: the CUDA kernels compiled as C++ against tests/emu/cuda_emu.h, run on the CPU);
# nothing needs listing here.

BUILD    ?= build
SAN      ?= 0
CUDA     ?= 0
CC       ?= cc
CXX      ?= g++
PREFIX   ?= /usr/local
DESTDIR  ?=
CUDA_HOME ?= /usr/local/cuda
NVCC     ?= $(CUDA_HOME)/bin/nvcc
CUDA_ARCH ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_80,code=sm_80 \
             -gencode arch=compute_90,code=compute_90
FUZZ_SECONDS ?= 60
VERSION  := 0.1.0

ifeq ($(SAN),1)
  override BUILD := $(BUILD)/san
endif
ifeq ($(CUDA),1)
  override BUILD := $(BUILD)/cuda
endif

PKGS      := openblas libarchive libzstd libwebp libjpeg
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -I/usr/include/stb
PKG_LIBS  := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lstb -ljq -lm

OPT      ?= -O2
CFLAGS   ?= $(OPT) -g
WARN     := -Wall -Wextra -Wno-unused-parameter -Wshadow -Wvla
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) -fopenmp -Ilib $(PKG_CFLAGS) $(CFLAGS) \
              -DSD_VERSION='"$(VERSION)"' -DSD_SHAREDIR='"$(PREFIX)/share/sd"' -MMD -MP
LDFLAGS  ?=
ALL_LDFLAGS := -fopenmp $(LDFLAGS)
LIBS     := $(PKG_LIBS) -lpthread

# C++ (tests/emu only): the same warnings (-Wvla is C's), the CUDA emulation runs blocks as pthreads
ALL_CXXFLAGS := -std=c++17 -D_GNU_SOURCE $(filter-out -Wvla,$(WARN)) -fopenmp -pthread -Ilib -Itests \
                $(PKG_CFLAGS) $(CFLAGS) -MMD -MP

ifeq ($(SAN),1)
  SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  ALL_CFLAGS += $(SANFLAGS)
  ALL_CXXFLAGS += $(SANFLAGS)
  ALL_LDFLAGS += $(SANFLAGS)
endif

CU_SRC :=
ifeq ($(CUDA),1)
  CU_SRC := $(wildcard lib/tensor/cuda/*.cu)
  ALL_CFLAGS += -DSD_CUDA -I$(CUDA_HOME)/include
  LIBS += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublasLt -lcublas -lcudart -lstdc++ -ldl
  NVCCFLAGS := -O2 -MMD -MP -std=c++17 $(CUDA_ARCH) -Ilib -DSD_CUDA -Xcompiler -Wall,-Wextra,-Wno-unused-parameter,-fPIC
endif

LIB_SRC  := $(sort $(wildcard lib/*/*.c lib/*/*/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o) $(CU_SRC:%.cu=$(BUILD)/obj/%.cu.o)
BIN_SRC  := $(sort $(wildcard bin/sd-*.c))
BINS     := $(BIN_SRC:bin/%.c=$(BUILD)/bin/%)
TEST_SRC := $(sort $(wildcard tests/unit/*.c tests/grad/*.c tests/golden/*.c tests/parity/*.c))
TESTS    := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
EMU_SRC  := $(sort $(wildcard tests/emu/*.cpp))
EMU_TESTS := $(EMU_SRC:tests/%.cpp=$(BUILD)/tests/%)
# The emulated CUDA build (CUDA=0 only): lib/tensor/cuda/*.cu compiled as C++ by $(CXX) against
# tests/emu/include (runtime, cuBLAS and device semantics on the CPU, see tests/emu/cuda_emu.h),
# the C files that depend on SD_CUDA recompiled with it, everything else shared with $(BUILD);
# the parity programs linked against it run in make check (build/emu/tests/parity/).
EMU_BUILD := $(BUILD)/emu
EMU_C_SRC := $(sort $(shell grep -l SD_CUDA $(LIB_SRC)))
EMU_OBJ  := $(filter-out $(EMU_C_SRC:%.c=$(BUILD)/obj/%.o),$(LIB_SRC:%.c=$(BUILD)/obj/%.o)) \
            $(EMU_C_SRC:%.c=$(EMU_BUILD)/obj/%.o) $(patsubst %.cu,$(EMU_BUILD)/obj/%.cu.o,$(wildcard lib/tensor/cuda/*.cu)) \
            $(EMU_BUILD)/obj/tests/emu/lib/cuda_emu_runtime.o $(EMU_BUILD)/obj/tests/emu/lib/cudnn_emu.o
EMU_LIBSD := $(EMU_BUILD)/libsd.a
EMU_PARITY := $(patsubst tests/%.c,$(EMU_BUILD)/tests/%,$(sort $(wildcard tests/parity/*.c)))
# the tools linked against it: tests/cli scripts run whole emulated-GPU trainings with them
EMU_BINS := $(BIN_SRC:bin/%.c=$(EMU_BUILD)/bin/%)
EMU_CXXFLAGS := $(ALL_CXXFLAGS) -DSD_CUDA -DSD_CUDA_EMU -Itests/emu/include
ifeq ($(CUDA),1)
  EMU_PARITY :=
  EMU_BINS :=
endif
BENCH_SRC := $(sort $(wildcard bench/*.c))
BENCHES  := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
LIBSD    := $(BUILD)/libsd.a

.PHONY: all config check tests emu emu-bin bench fuzz deps install clean demo
.DEFAULT_GOAL := all

all: config $(LIBSD) $(BINS)

config:
	@echo "sd-* $(VERSION) build configuration"
	@echo "  compiler : $(CC) ($$($(CC) -dumpfullversion 2>/dev/null || $(CC) -dumpversion))"
	@echo "  flags    : $(CFLAGS) $(WARN)"
	@echo "  BLAS     : $$(pkg-config --modversion openblas 2>/dev/null | sed 's/^/OpenBLAS /' || echo 'not found (run make deps)')"
	@echo "  CUDA     : $(if $(filter 1,$(CUDA)),on ($$($(NVCC) --version | tail -1)),off)"
	@echo "  sanitize : $(if $(filter 1,$(SAN)),ASan+UBSan,off)"
	@echo "  build dir: $(BUILD)"

$(LIBSD): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/obj/%.cu.o: %.cu
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(BUILD)/bin/%: bin/%.c $(LIBSD)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(ALL_LDFLAGS) $(LIBSD) $(LIBS)

$(BUILD)/tests/%: tests/%.c tests/test.h $(LIBSD)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Itests $< -o $@ $(ALL_LDFLAGS) $(LIBSD) $(LIBS)

$(BUILD)/tests/emu/%: tests/emu/%.cpp tests/test.h $(LIBSD)
	@mkdir -p $(@D)
	$(CXX) $(ALL_CXXFLAGS) $< -o $@ $(ALL_LDFLAGS) -pthread $(LIBSD) $(LIBS)

$(EMU_LIBSD): $(EMU_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(EMU_BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -DSD_CUDA -DSD_CUDA_EMU -c $< -o $@

$(EMU_BUILD)/obj/%.cu.o: %.cu
	@mkdir -p $(@D)
	$(CXX) $(EMU_CXXFLAGS) -x c++ -c $< -o $@

$(EMU_BUILD)/obj/%.o: %.cpp
	@mkdir -p $(@D)
	$(CXX) $(EMU_CXXFLAGS) -c $< -o $@

$(EMU_BUILD)/tests/%: tests/%.c tests/test.h $(EMU_LIBSD)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -DSD_CUDA -DSD_CUDA_EMU -Itests $< -o $@ $(ALL_LDFLAGS) $(EMU_LIBSD) $(LIBS) -lstdc++

$(EMU_BUILD)/bin/%: bin/%.c $(EMU_LIBSD)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -DSD_CUDA -DSD_CUDA_EMU $< -o $@ $(ALL_LDFLAGS) $(EMU_LIBSD) $(LIBS) -lstdc++

# the parity programs; `make emu-bin` also the tools (for tests/parity/train_cli.sh with SD_BUILD=build/emu)
emu: $(EMU_PARITY)
emu-bin: emu $(EMU_BINS)

$(BUILD)/bench/%: bench/%.c $(LIBSD)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(ALL_LDFLAGS) $(LIBSD) $(LIBS)

tests: all $(TESTS) $(EMU_TESTS) $(EMU_PARITY) $(EMU_BINS)

check: tests
	SD_BUILD=$(BUILD) tests/run

bench: all $(BENCHES)
	SD_BUILD=$(BUILD) bench/run

# libFuzzer targets: libsd rebuilt with clang + fuzzer instrumentation in build/fuzz/.
FUZZ_BUILD := build/fuzz
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -fopenmp -Ilib $(PKG_CFLAGS) -DSD_VERSION='"$(VERSION)"' \
               -DSD_SHAREDIR='"$(PREFIX)/share/sd"' -fsanitize=fuzzer-no-link,address,undefined
FUZZ_OBJ := $(LIB_SRC:%.c=$(FUZZ_BUILD)/obj/%.o)
FUZZERS  := $(FUZZ_SRC:tests/fuzz/%.c=$(FUZZ_BUILD)/%)

$(FUZZ_BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	clang $(FUZZ_CFLAGS) -c $< -o $@

$(FUZZ_BUILD)/libsd.a: $(FUZZ_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_BUILD)/libsd.a
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer $< -o $@ $(FUZZ_BUILD)/libsd.a $(LIBS) -fopenmp

fuzz: $(FUZZERS)
	FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run $(FUZZERS)

deps:
	tools/deps.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include/sd \
	  $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)$(PREFIX)/share/man/man7 \
	  $(DESTDIR)$(PREFIX)/share/sd
	install -m 755 $(BINS) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(LIBSD) $(DESTDIR)$(PREFIX)/lib/
	cd lib && find . -name '*.h' -exec install -D -m 644 {} $(DESTDIR)$(PREFIX)/include/sd/{} \;
	for s in 1 5 7; do for f in man/man$$s/*.$$s; do [ -e "$$f" ] && install -m 644 $$f $(DESTDIR)$(PREFIX)/share/man/man$$s/; done; done; true
	cp -R share/sd/. $(DESTDIR)$(PREFIX)/share/sd/
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' \
	  -e 's|@LIBS@|$(PKG_LIBS) -lpthread -fopenmp|g' tools/sd.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/sd.pc

demo: all
	examples/demo.sh $(BUILD)

clean:
	rm -rf build

-include $(shell find $(BUILD) $(FUZZ_BUILD) -name '*.d' 2>/dev/null)
