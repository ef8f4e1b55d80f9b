#pragma once

// What PyTorch's CMake generates as c10/cuda/impl/cuda_cmake_macros.h for a shared
// c10_cuda library (LibTorch's); Debian's libtorch-dev lacks the file. See
// third_party/libtorch_cuda/BUILD.bazel.
#define C10_CUDA_BUILD_SHARED_LIBS
