# CUTLASS C++ headers, from the PyPI wheel nvidia-cutlass (install it with
# `pip install --no-deps nvidia-cutlass==4.2.0.0`). Nothing is vendored: we ask
# the build's Python where the `cutlass_library` package lives and use the
# headers it ships under source/include. Sets LLMPACK_CUTLASS_INCLUDE.
execute_process(
  COMMAND "${Python_EXECUTABLE}" -c
    "import importlib.util as u, os; s = u.find_spec('cutlass_library'); print(os.path.join(list(s.submodule_search_locations)[0], 'source', 'include') if s else '', end='')"
  OUTPUT_VARIABLE _cutlass_inc ERROR_QUIET)
if(_cutlass_inc AND EXISTS "${_cutlass_inc}/cutlass/cutlass.h")
  set(LLMPACK_CUTLASS_INCLUDE "${_cutlass_inc}")
  message(STATUS "llmpack: CUTLASS headers at ${_cutlass_inc}")
elseif(LLMPACK_CUDA STREQUAL "ON")
  message(FATAL_ERROR "llmpack: LLMPACK_CUDA=ON needs the CUTLASS headers: "
    "pip install --no-deps nvidia-cutlass==4.2.0.0")
else()
  set(LLMPACK_CUTLASS_INCLUDE "")
  message(STATUS "llmpack: CUTLASS headers not found (pip install --no-deps nvidia-cutlass==4.2.0.0); CUTLASS kernels skipped")
endif()
