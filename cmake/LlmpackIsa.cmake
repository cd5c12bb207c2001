# Per-ISA CPU translation units.
#
# For each kernel family F, csrc/F/F_cpu_generic.cpp is always built; on x86-64
# csrc/F/F_cpu_avx2.cpp and csrc/F/F_cpu_avx512.cpp are added, each with only
# its own ISA's flags, and LLMPACK_HAVE_AVX2 / LLMPACK_HAVE_AVX512 tell the
# dispatcher which tables exist. Run-time choice is in csrc/common/isa.h.
set(LLMPACK_FLAGS_AVX2 -mavx2 -mfma -mf16c -mbmi -mbmi2 -mpopcnt)
set(LLMPACK_FLAGS_AVX512 ${LLMPACK_FLAGS_AVX2} -mavx512f -mavx512bw -mavx512vl -mavx512dq)
# Optional 5th unit, csrc/F/F_cpu_amx.cpp, for families that have one: chosen
# only on CPUs with AMX-BF16 (+ AVX512-BF16/VBMI2) whose OS grants tile state.
set(LLMPACK_FLAGS_AMX ${LLMPACK_FLAGS_AVX512} -mavx512bf16 -mavx512vbmi2 -mamx-tile -mamx-bf16)
# Optional unit csrc/F/F_cpu_avx512_bf16.cpp: chosen on CPUs with AVX512_BF16
# and AVX512_VNNI (every such CPU has both: Cooper Lake, Sapphire Rapids, Zen 4).
set(LLMPACK_FLAGS_AVX512_BF16 ${LLMPACK_FLAGS_AVX512} -mavx512bf16 -mavx512vnni)

if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
  set(LLMPACK_X86 ON)
else()
  set(LLMPACK_X86 OFF)
endif()

function(llmpack_add_isa_sources target)
  foreach(fam IN LISTS ARGN)
    target_sources(${target} PRIVATE csrc/${fam}/${fam}_cpu_generic.cpp)
    if(LLMPACK_X86)
      target_sources(${target} PRIVATE csrc/${fam}/${fam}_cpu_avx2.cpp csrc/${fam}/${fam}_cpu_avx512.cpp)
      set_source_files_properties(csrc/${fam}/${fam}_cpu_avx2.cpp
        PROPERTIES COMPILE_OPTIONS "${LLMPACK_FLAGS_AVX2}")
      set_source_files_properties(csrc/${fam}/${fam}_cpu_avx512.cpp
        PROPERTIES COMPILE_OPTIONS "${LLMPACK_FLAGS_AVX512}")
      if(EXISTS "${PROJECT_SOURCE_DIR}/csrc/${fam}/${fam}_cpu_avx512_bf16.cpp")
        target_sources(${target} PRIVATE csrc/${fam}/${fam}_cpu_avx512_bf16.cpp)
        set_source_files_properties(csrc/${fam}/${fam}_cpu_avx512_bf16.cpp
          PROPERTIES COMPILE_OPTIONS "${LLMPACK_FLAGS_AVX512_BF16}")
      endif()
      if(EXISTS "${PROJECT_SOURCE_DIR}/csrc/${fam}/${fam}_cpu_amx.cpp")
        target_sources(${target} PRIVATE csrc/${fam}/${fam}_cpu_amx.cpp)
        set_source_files_properties(csrc/${fam}/${fam}_cpu_amx.cpp
          PROPERTIES COMPILE_OPTIONS "${LLMPACK_FLAGS_AMX}")
      endif()
    endif()
  endforeach()
  if(LLMPACK_X86)
    target_compile_definitions(${target} PRIVATE LLMPACK_HAVE_AVX2=1 LLMPACK_HAVE_AVX512=1 LLMPACK_HAVE_AMX=1)
  endif()
endfunction()
