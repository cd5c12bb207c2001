# SIMT emulator builds (tests only): the CUDA kernels (csrc/*/*_cuda.cu)
# compiled as host C++ with LLMPACK_SIMT_EMULATION, linked with the emulator
# runtime (csrc/common/simt/) into libllmpack_simt.so, whose ops are
# torch.ops.llmpack_simt.* and whose "CUDA" impls run the emulated kernels on
# CPU tensors. Used by tests/simt/CMakeLists.txt (standalone through
# scripts/build_simt.sh, or as a subdirectory with -DLLMPACK_SIMT_TESTS=ON).
#
#   LLMPACK_SIMT_ASAN=ON   build everything with AddressSanitizer
#   LLMPACK_SIMT_ARCH=800  architecture the emulator models (limits, LLMPACK_CUDA_ARCH)
#
# Sources: the main CMakeLists.txt's lists (LLMPACK_CPU_SOURCES,
# LLMPACK_CUDA_SOURCES compiled as C++, LLMPACK_ISA_FAMILIES), see
# llmpack_simt_main_sources below.

option(LLMPACK_SIMT_ASAN "Build the SIMT emulator targets with AddressSanitizer" OFF)
set(LLMPACK_SIMT_ARCH "800" CACHE STRING "Architecture the SIMT emulator models (800 or 900)")

get_filename_component(LLMPACK_ROOT "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)

# torch's headers and libtorch_cpu, found through Python as the main
# CMakeLists.txt does (no find_package(Torch)). No-op when already known.
macro(llmpack_simt_find_torch)
  if(NOT TORCH_DIR)
    find_package(Python COMPONENTS Interpreter REQUIRED)
    execute_process(
      COMMAND "${Python_EXECUTABLE}" -c "import os, torch; print(os.path.dirname(torch.__file__), end='')"
      OUTPUT_VARIABLE TORCH_DIR RESULT_VARIABLE _llmpack_torch_rc ERROR_QUIET)
    if(NOT _llmpack_torch_rc EQUAL 0)
      message(FATAL_ERROR "llmpack SIMT: torch is not importable by ${Python_EXECUTABLE}; "
        "run scripts/build_simt.sh from the environment that has torch (or set PYTHON=...)")
    endif()
  endif()
  if(NOT TORCH_CPU_LIB)
    find_library(TORCH_CPU_LIB torch_cpu PATHS "${TORCH_DIR}/lib" NO_DEFAULT_PATH REQUIRED)
  endif()
  find_library(LLMPACK_C10_LIB c10 PATHS "${TORCH_DIR}/lib" NO_DEFAULT_PATH)
endmacro()

if(LLMPACK_SIMT_ASAN)
  set(LLMPACK_SIMT_OPT -O1 -g -fno-omit-frame-pointer -fsanitize=address)
  set(LLMPACK_SIMT_LINK -fsanitize=address)
else()
  set(LLMPACK_SIMT_OPT -O1 -g1)
  set(LLMPACK_SIMT_LINK)
endif()

# Flags every emulation-mode target gets.
function(llmpack_simt_emulation target)
  target_compile_features(${target} PRIVATE cxx_std_20)
  target_include_directories(${target} PRIVATE "${LLMPACK_ROOT}/csrc")
  target_compile_definitions(${target} PRIVATE LLMPACK_SIMT_EMULATION=1 LLMPACK_SIMT_ARCH=${LLMPACK_SIMT_ARCH})
  target_compile_options(${target} PRIVATE ${LLMPACK_SIMT_OPT} -Wall -Wno-unused-function)
  target_link_options(${target} PRIVATE ${LLMPACK_SIMT_LINK})
  set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE ON CXX_VISIBILITY_PRESET hidden)
endfunction()

# Treat .cu files as C++ (CMake adds -x c++).
function(llmpack_simt_cu_as_cxx)
  foreach(f IN LISTS ARGN)
    set_source_files_properties("${f}" PROPERTIES LANGUAGE CXX)
  endforeach()
endfunction()

# The emulator runtime, linked into every emulation binary.
function(llmpack_simt_add_runtime target)
  add_library(${target} STATIC
    "${LLMPACK_ROOT}/csrc/common/simt/simt.cpp"
    "${LLMPACK_ROOT}/csrc/common/simt/ptx_emu.cpp")
  llmpack_simt_emulation(${target})
endfunction()

# The real library's source lists, from the one place they are kept: the
# variables of the main CMakeLists.txt when this is part of that project, else
# the same set(...) blocks read from its text (standalone build), so a new
# source or kernel family is picked up with no edit here.
function(llmpack_simt_main_sources out_cpu out_cuda out_families)
  set(_vars LLMPACK_CPU_SOURCES LLMPACK_CUDA_SOURCES LLMPACK_ISA_FAMILIES)
  if(NOT DEFINED LLMPACK_CPU_SOURCES)
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${LLMPACK_ROOT}/CMakeLists.txt")
    file(READ "${LLMPACK_ROOT}/CMakeLists.txt" _txt)
    foreach(_v IN LISTS _vars)
      if(NOT _txt MATCHES "set\\(${_v}[ \t\r\n]+([^)]*)\\)")
        message(FATAL_ERROR "llmpack SIMT: cannot find set(${_v} ...) in ${LLMPACK_ROOT}/CMakeLists.txt")
      endif()
      string(REGEX REPLACE "#[^\n]*" "" _body "${CMAKE_MATCH_1}")
      string(REGEX REPLACE "[ \t\r\n]+" ";" _body "${_body}")
      list(FILTER _body EXCLUDE REGEX "^$")
      set(${_v} ${_body})
    endforeach()
  endif()
  set(_cpu)
  foreach(_f IN LISTS LLMPACK_CPU_SOURCES)
    if(NOT _f MATCHES "common/info\\.cpp$")  # build facts of the real library only
      list(APPEND _cpu "${LLMPACK_ROOT}/${_f}")
    endif()
  endforeach()
  set(_cuda)
  foreach(_f IN LISTS LLMPACK_CUDA_SOURCES)
    list(APPEND _cuda "${LLMPACK_ROOT}/${_f}")
  endforeach()
  set(${out_cpu} ${_cpu} PARENT_SCOPE)
  set(${out_cuda} ${_cuda} PARENT_SCOPE)
  set(${out_families} ${LLMPACK_ISA_FAMILIES} PARENT_SCOPE)
endfunction()

# libllmpack_simt.so: torch.ops.llmpack_simt.*, from the real library's sources
# (its CPU sources but info.cpp, the per-ISA CPU units -- the ops files
# reference their tables -- and every CUDA source compiled as C++; CUTLASS
# sources compile to their "not built" fallback, LLMPACK_WITH_CUTLASS unset).
function(llmpack_simt_add_library target runtime)
  llmpack_simt_main_sources(_cpu _cu _families)
  set(_srcs ${_cpu} ${_cu})
  set(_x86 OFF)
  if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
    set(_x86 ON)
  endif()
  set(_quiet -Wno-narrowing -Wno-maybe-uninitialized -Wno-uninitialized)  # not emulator code: keep the log readable
  foreach(_fam IN LISTS _families)
    set(_g "${LLMPACK_ROOT}/csrc/${_fam}/${_fam}_cpu_generic.cpp")
    list(APPEND _srcs "${_g}")
    set_source_files_properties("${_g}" PROPERTIES COMPILE_OPTIONS "${_quiet}")
    if(_x86)
      set(_a2 "${LLMPACK_ROOT}/csrc/${_fam}/${_fam}_cpu_avx2.cpp")
      set(_a5 "${LLMPACK_ROOT}/csrc/${_fam}/${_fam}_cpu_avx512.cpp")
      list(APPEND _srcs "${_a2}" "${_a5}")
      set_source_files_properties("${_a2}" PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c;-mbmi;-mbmi2;-mpopcnt;${_quiet}")
      set_source_files_properties("${_a5}" PROPERTIES COMPILE_OPTIONS
        "-mavx2;-mfma;-mf16c;-mbmi;-mbmi2;-mpopcnt;-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;${_quiet}")
    endif()
  endforeach()
  set_source_files_properties("${LLMPACK_ROOT}/csrc/common/cpu_features.cpp" PROPERTIES COMPILE_OPTIONS "${_quiet}")
  llmpack_simt_cu_as_cxx(${_cu})
  add_library(${target} SHARED ${_srcs})
  llmpack_simt_emulation(${target})
  target_include_directories(${target} PRIVATE "${TORCH_DIR}/include")
  target_compile_definitions(${target} PRIVATE
    LLMPACK_NS=llmpack_simt LLMPACK_WITH_CUDA=1
    TORCH_TARGET_VERSION=0x020d000000000000 LLMPACK_VERSION="simt")
  if(_x86)
    target_compile_definitions(${target} PRIVATE LLMPACK_HAVE_AVX2=1 LLMPACK_HAVE_AVX512=1)
  endif()
  # Every symbol resolved at link time: a missing source is a build error,
  # not a failure when Python loads the library.
  target_link_options(${target} PRIVATE -Wl,--no-undefined)
  target_link_libraries(${target} PRIVATE ${runtime} "${TORCH_CPU_LIB}")
  if(LLMPACK_C10_LIB)
    target_link_libraries(${target} PRIVATE "${LLMPACK_C10_LIB}")
  endif()
  set_target_properties(${target} PROPERTIES
    LIBRARY_OUTPUT_DIRECTORY "${CMAKE_CURRENT_BINARY_DIR}"
    BUILD_RPATH "${TORCH_DIR}/lib")
endfunction()

# simt_build.json in the build folder: what the Python tests need to know.
function(llmpack_simt_write_info)
  # Runtimes a Python process must preload to load the ASan library: libasan
  # first, and libstdc++ with it, or ASan's __cxa_throw interceptor finds no
  # real __cxa_throw (python itself does not link libstdc++) and aborts.
  set(_asan_rt "")
  set(_stdcxx_rt "")
  if(LLMPACK_SIMT_ASAN)
    execute_process(COMMAND "${CMAKE_CXX_COMPILER}" -print-file-name=libasan.so
      OUTPUT_VARIABLE _asan_rt OUTPUT_STRIP_TRAILING_WHITESPACE)
    execute_process(COMMAND "${CMAKE_CXX_COMPILER}" -print-file-name=libstdc++.so.6
      OUTPUT_VARIABLE _stdcxx_rt OUTPUT_STRIP_TRAILING_WHITESPACE)
    get_filename_component(_asan_rt "${_asan_rt}" REALPATH)
    get_filename_component(_stdcxx_rt "${_stdcxx_rt}" REALPATH)
  endif()
  if(LLMPACK_SIMT_ASAN)
    set(_asan_json true)
  else()
    set(_asan_json false)
  endif()
  file(GENERATE OUTPUT "${CMAKE_CURRENT_BINARY_DIR}/simt_build.json" CONTENT "{
  \"asan\": ${_asan_json},
  \"asan_runtime\": \"${_asan_rt}\",
  \"stdcxx_runtime\": \"${_stdcxx_rt}\",
  \"arch\": ${LLMPACK_SIMT_ARCH},
  \"library\": \"$<TARGET_FILE:llmpack_simt>\",
  \"unit_tests\": \"$<TARGET_FILE:simt_unit_tests>\",
  \"broken_kernels\": \"$<TARGET_FILE:simt_broken_kernels>\",
  \"source_dir\": \"${LLMPACK_ROOT}\",
  \"compiler\": \"${CMAKE_CXX_COMPILER}\"
}
")
endfunction()
