# FindNCCL: NVIDIA's NCCL (nccl.h, libnccl).
#
# Looks under NCCL_ROOT / NCCL_HOME / NCCL_DIR (CMake or environment variables), the CUDA
# toolkit (CUDAToolkit_ROOT, CUDA_HOME, CUDA_PATH, CUDAToolkit_LIBRARY_ROOT, /usr/local/cuda),
# the nvidia-nccl-cu* pip package next to a pip wheel's torch (site-packages/nvidia/nccl;
# it ships libnccl.so.2 without the libnccl.so link), then the system paths (Debian's
# libnccl-dev).
#
# Defines NCCL_FOUND, NCCL_INCLUDE_DIR, NCCL_LIBRARY, NCCL_VERSION (when nccl.h says) and
# the imported target NCCL::NCCL.

set(_nccl_hints "")
foreach(_var NCCL_ROOT NCCL_HOME NCCL_DIR CUDAToolkit_ROOT CUDA_HOME CUDA_PATH)
  if(DEFINED ${_var})
    list(APPEND _nccl_hints "${${_var}}")
  endif()
  if(DEFINED ENV{${_var}})
    list(APPEND _nccl_hints "$ENV{${_var}}")
  endif()
endforeach()
if(CUDAToolkit_LIBRARY_ROOT)
  list(APPEND _nccl_hints "${CUDAToolkit_LIBRARY_ROOT}")
endif()
if(CUDAToolkit_INCLUDE_DIRS)
  foreach(_dir ${CUDAToolkit_INCLUDE_DIRS})
    get_filename_component(_dir "${_dir}/.." ABSOLUTE)
    list(APPEND _nccl_hints "${_dir}")
  endforeach()
endif()
# pip: site-packages/torch (TORCH_INSTALL_PREFIX) next to site-packages/nvidia/nccl.
if(TORCH_INSTALL_PREFIX)
  list(APPEND _nccl_hints "${TORCH_INSTALL_PREFIX}/../nvidia/nccl")
endif()
list(APPEND _nccl_hints /usr/local/cuda)

find_path(NCCL_INCLUDE_DIR nccl.h
  HINTS ${_nccl_hints}
  PATH_SUFFIXES include)
find_library(NCCL_LIBRARY
  NAMES nccl libnccl.so.2 NAMES_PER_DIR
  HINTS ${_nccl_hints}
  PATH_SUFFIXES lib lib64 lib/x86_64-linux-gnu targets/x86_64-linux/lib)

if(NCCL_INCLUDE_DIR AND EXISTS "${NCCL_INCLUDE_DIR}/nccl.h")
  file(STRINGS "${NCCL_INCLUDE_DIR}/nccl.h" _nccl_version_lines
    REGEX "^#define NCCL_(MAJOR|MINOR|PATCH)[ \t]+[0-9]+")
  foreach(_part MAJOR MINOR PATCH)
    string(REGEX REPLACE ".*#define NCCL_${_part}[ \t]+([0-9]+).*" "\\1" _nccl_${_part} "${_nccl_version_lines}")
  endforeach()
  if(_nccl_MAJOR MATCHES "^[0-9]+$" AND _nccl_MINOR MATCHES "^[0-9]+$" AND _nccl_PATCH MATCHES "^[0-9]+$")
    set(NCCL_VERSION "${_nccl_MAJOR}.${_nccl_MINOR}.${_nccl_PATCH}")
  endif()
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(NCCL
  REQUIRED_VARS NCCL_LIBRARY NCCL_INCLUDE_DIR
  VERSION_VAR NCCL_VERSION
  REASON_FAILURE_MESSAGE
    "nccl.h and libnccl were not found. Point NCCL_ROOT at an NCCL install (with include/ and lib/), e.g. -DNCCL_ROOT=/usr/local/cuda or, for pip's nvidia-nccl-cu12, -DNCCL_ROOT=<site-packages>/nvidia/nccl, or install libnccl-dev, or configure with -DPPC_WITH_CUDA=OFF.")

if(NCCL_FOUND AND NOT TARGET NCCL::NCCL)
  add_library(NCCL::NCCL UNKNOWN IMPORTED)
  set_target_properties(NCCL::NCCL PROPERTIES
    IMPORTED_LOCATION "${NCCL_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${NCCL_INCLUDE_DIR}")
endif()
mark_as_advanced(NCCL_INCLUDE_DIR NCCL_LIBRARY)
