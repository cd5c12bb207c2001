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
# Sources are globbed, so a new kernel family is picked up without edits here:
# csrc/registry.cpp, csrc/common/{cpu_features,parallel}.cpp,
# csrc/*/*_ops.cpp, csrc/*/*_cuda.cu (as C++), and the per-ISA CPU units
# csrc/*/*_cpu_{generic,avx2,avx512}.cpp (the ops files reference their
# tables even though the emulator library registers only the CUDA impls).

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

# libllmpack_simt.so: torch.ops.llmpack_simt.*, from the real library's sources.
function(llmpack_simt_add_library target runtime)
  file(GLOB _ops CONFIGURE_DEPENDS "${LLMPACK_ROOT}/csrc/*/*_ops.cpp")
  file(GLOB _cu CONFIGURE_DEPENDS "${LLMPACK_ROOT}/csrc/*/*_cuda.cu")
  file(GLOB _cpu_generic CONFIGURE_DEPENDS "${LLMPACK_ROOT}/csrc/*/*_cpu_generic.cpp")
  list(FILTER _ops EXCLUDE REGEX "/common/")
  list(FILTER _cu EXCLUDE REGEX "/common/")
  set(_srcs
    "${LLMPACK_ROOT}/csrc/registry.cpp"
    "${LLMPACK_ROOT}/csrc/common/cpu_features.cpp"
    "${LLMPACK_ROOT}/csrc/common/parallel.cpp"
    ${_ops} ${_cu} ${_cpu_generic})
  set(_x86 OFF)
  if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
    set(_x86 ON)
    file(GLOB _avx2 CONFIGURE_DEPENDS "${LLMPACK_ROOT}/csrc/*/*_cpu_avx2.cpp")
    file(GLOB _avx512 CONFIGURE_DEPENDS "${LLMPACK_ROOT}/csrc/*/*_cpu_avx512.cpp")
    foreach(_f IN LISTS _avx2)
      set_source_files_properties("${_f}" PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c;-mbmi;-mbmi2;-mpopcnt")
    endforeach()
    foreach(_f IN LISTS _avx512)
      set_source_files_properties("${_f}" PROPERTIES COMPILE_OPTIONS
        "-mavx2;-mfma;-mf16c;-mbmi;-mbmi2;-mpopcnt;-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq")
    endforeach()
    list(APPEND _srcs ${_avx2} ${_avx512})
  endif()
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
    LIBRARY_OUTPUT_DIRECTORY "${CMAKE_BINARY_DIR}"
    BUILD_RPATH "${TORCH_DIR}/lib")
endfunction()

# simt_build.json in the build folder: what the Python tests need to know.
function(llmpack_simt_write_info)
  set(_asan_rt "")
  if(LLMPACK_SIMT_ASAN)
    execute_process(COMMAND "${CMAKE_CXX_COMPILER}" -print-file-name=libasan.so
      OUTPUT_VARIABLE _asan_rt OUTPUT_STRIP_TRAILING_WHITESPACE)
  endif()
  if(LLMPACK_SIMT_ASAN)
    set(_asan_json true)
  else()
    set(_asan_json false)
  endif()
  file(GENERATE OUTPUT "${CMAKE_BINARY_DIR}/simt_build.json" CONTENT "{
  \"asan\": ${_asan_json},
  \"asan_runtime\": \"${_asan_rt}\",
  \"arch\": ${LLMPACK_SIMT_ARCH},
  \"library\": \"$<TARGET_FILE:llmpack_simt>\",
  \"unit_tests\": \"$<TARGET_FILE:simt_unit_tests>\",
  \"broken_kernels\": \"$<TARGET_FILE:simt_broken_kernels>\",
  \"source_dir\": \"${LLMPACK_ROOT}\",
  \"compiler\": \"${CMAKE_CXX_COMPILER}\"
}
")
endfunction()
