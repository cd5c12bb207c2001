# Decide whether to compile the CUDA kernels (LLMPACK_CUDA = AUTO | ON | OFF).
#
# The nvcc found on PATH may be a wrapper script outside the toolkit, which
# defeats CMake's toolkit detection. nvcc itself reports where its real binary
# lives (the `_HERE_` line of `nvcc -dryrun`), so we point CMake there.
# CUDACXX and CUDA_HOME are honoured, in that order, before PATH.
string(TOUPPER "${LLMPACK_CUDA}" LLMPACK_CUDA)
set(LLMPACK_WITH_CUDA OFF)
set(_why "")

if(LLMPACK_CUDA STREQUAL "OFF")
  set(_why "LLMPACK_CUDA=OFF")
else()
  if(DEFINED ENV{CUDACXX} AND NOT "$ENV{CUDACXX}" STREQUAL "")
    set(_nvcc "$ENV{CUDACXX}")
  elseif(DEFINED ENV{CUDA_HOME} AND EXISTS "$ENV{CUDA_HOME}/bin/nvcc")
    set(_nvcc "$ENV{CUDA_HOME}/bin/nvcc")
  else()
    find_program(_nvcc nvcc)
  endif()
  if(NOT _nvcc OR NOT EXISTS "${_nvcc}")
    set(_why "no nvcc found (looked at CUDACXX, CUDA_HOME/bin and PATH)")
  else()
    file(WRITE "${CMAKE_BINARY_DIR}/llmpack_probe.cu" "")
    execute_process(COMMAND "${_nvcc}" -dryrun -c "${CMAKE_BINARY_DIR}/llmpack_probe.cu"
      OUTPUT_VARIABLE _dry ERROR_VARIABLE _dry RESULT_VARIABLE _dry_rc)
    string(REGEX MATCH "_HERE_=([^\r\n]*)" _m "${_dry}")
    if(_m AND EXISTS "${CMAKE_MATCH_1}/nvcc")
      set(_nvcc_real "${CMAKE_MATCH_1}/nvcc")
      get_filename_component(_cuda_root "${CMAKE_MATCH_1}/.." ABSOLUTE)
      set(CMAKE_CUDA_COMPILER "${_nvcc_real}")
      set(CUDAToolkit_ROOT "${_cuda_root}")
      message(STATUS "llmpack: nvcc ${_nvcc} -> toolkit ${_cuda_root}")
      set(LLMPACK_WITH_CUDA ON)
    else()
      set(_why "${_nvcc} did not report its toolkit folder (nvcc -dryrun rc=${_dry_rc})")
    endif()
  endif()
endif()

if(LLMPACK_WITH_CUDA)
  set(CMAKE_CUDA_ARCHITECTURES "${LLMPACK_CUDA_ARCHS}")
  # .cu files never include torch headers, so C++17 suffices there (CUTLASS
  # needs 17); CMake 3.25 has no CUDA C++20 flag for nvcc 13 anyway.
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  include(third_party/cutlass.cmake)
  message(STATUS "llmpack: CUDA kernels ON for archs ${LLMPACK_CUDA_ARCHS}")
elseif(LLMPACK_CUDA STREQUAL "ON")
  message(FATAL_ERROR "llmpack: LLMPACK_CUDA=ON but CUDA cannot be used: ${_why}. "
    "Set CUDACXX or CUDA_HOME, or build with LLMPACK_CUDA=AUTO/OFF.")
else()
  message(STATUS "llmpack: CUDA kernels not compiled: ${_why}")
endif()

function(llmpack_add_cuda_sources target)
  target_sources(${target} PRIVATE ${ARGN})
  set_target_properties(${target} PROPERTIES
    CUDA_ARCHITECTURES "${LLMPACK_CUDA_ARCHS}"
    # Static cudart: the library still loads on machines with no CUDA at all
    # (CI, CPU-only torch); the driver is only looked up on first CUDA call.
    CUDA_RUNTIME_LIBRARY Static)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-O3 -lineinfo --expt-relaxed-constexpr -Xcompiler=-fvisibility=hidden>)
  string(REPLACE ";" "," _archs "${LLMPACK_CUDA_ARCHS}")
  target_compile_definitions(${target} PRIVATE LLMPACK_WITH_CUDA=1 LLMPACK_CUDA_ARCHS_STR="${_archs}")
  if(LLMPACK_CUTLASS_INCLUDE)
    target_include_directories(${target} PRIVATE "${LLMPACK_CUTLASS_INCLUDE}")
    target_compile_definitions(${target} PRIVATE LLMPACK_WITH_CUTLASS=1)
  endif()
endfunction()
