# Finds every third-party dependency and folds them into one INTERFACE target, cvx_deps.

find_package(Torch REQUIRED)
find_package(MPI REQUIRED COMPONENTS C)
if(CVX_GPU_KIT)
  # log_setup (and through it Boost.Regex and ICU) is not needed by the kit's sources.
  find_package(Boost 1.74 REQUIRED COMPONENTS log program_options)
else()
  find_package(Boost 1.74 REQUIRED COMPONENTS log log_setup program_options)
endif()
find_package(nlohmann_json 3.9 REQUIRED)
find_package(Threads REQUIRED)
if(NOT CVX_GPU_KIT)
find_package(PkgConfig REQUIRED)
pkg_check_modules(LIBAV REQUIRED IMPORTED_TARGET libavformat libavcodec libavutil libswscale)
# TensorBoard event files: the system protobuf, the one libtorch itself links (Debian:
# libprotobuf-dev protobuf-compiler). cvx uses its lite runtime only (proto/tensorboard_event.proto).
find_package(Protobuf REQUIRED)
if(NOT TARGET protobuf::libprotobuf-lite OR NOT Protobuf_PROTOC_EXECUTABLE)
  message(FATAL_ERROR "cvx needs protobuf's lite library and protoc for TensorBoard event files "
    "(Debian/Ubuntu: apt install libprotobuf-dev protobuf-compiler).")
endif()
# The interpreter of tools/plot_metrics and tools/read_tfevents.py: /usr/bin/python3 first (HINTS
# come before PATH), the one apt's python3-matplotlib and python3-protobuf belong to; a pyenv or
# conda python3 earlier on PATH usually lacks them. -DCVX_PYTHON3=... overrides.
find_program(CVX_PYTHON3 NAMES python3 HINTS /usr/bin)
if(NOT CVX_PYTHON3)
  set(CVX_PYTHON3 python3)
endif()
# sentencepiece (T5 tokenizer): linked only into the cvx_spm module, never into cvx itself.
find_path(SENTENCEPIECE_INCLUDE_DIR sentencepiece_processor.h)
find_library(SENTENCEPIECE_LIBRARY sentencepiece)
if(NOT SENTENCEPIECE_INCLUDE_DIR OR NOT SENTENCEPIECE_LIBRARY)
  message(FATAL_ERROR "cvx needs sentencepiece for the T5 tokenizer (Debian/Ubuntu: apt install "
    "libsentencepiece-dev; elsewhere pass -DSENTENCEPIECE_INCLUDE_DIR=... -DSENTENCEPIECE_LIBRARY=...).")
endif()

# ---- parallel HDF5: the serial build cannot write one file from many ranks.
set(HDF5_PREFER_PARALLEL TRUE)
if(NOT DEFINED HDF5_ROOT AND EXISTS "/usr/lib/x86_64-linux-gnu/hdf5/openmpi")
  # Debian installs serial and parallel HDF5 side by side; point at the MPI one.
  set(HDF5_ROOT "/usr/lib/x86_64-linux-gnu/hdf5/openmpi")
  set(HDF5_C_COMPILER_EXECUTABLE "/usr/bin/h5pcc")
endif()
find_package(HDF5 REQUIRED COMPONENTS C)
if(NOT HDF5_IS_PARALLEL)
  message(FATAL_ERROR
    "cvx needs the parallel (MPI) build of HDF5, but the one found is serial "
    "(${HDF5_C_LIBRARIES}). On Debian/Ubuntu: apt install libhdf5-openmpi-dev; "
    "on a cluster: module load a parallel hdf5, or pass -DHDF5_ROOT=<parallel hdf5 prefix>.")
endif()

endif()  # NOT CVX_GPU_KIT

# ---- CUDA / NCCL: cvx's GPU path needs a CUDA-enabled libtorch and NCCL (CVX_HAVE_CUDA). With a
# CPU-only libtorch but a CUDA toolkit and NCCL on the machine, the NCCL communicator is still
# compiled and linked once, into cvx_nccl_link_check (CVX_NCCL_LINK_CHECK), so that code cannot rot
# on machines without a GPU.
set(CVX_HAVE_CUDA OFF)
set(CVX_NCCL_LINK_CHECK OFF)
if(NOT CVX_WITH_CUDA STREQUAL "OFF")
  set(_torch_has_cuda OFF)
  if(TARGET torch_cuda OR CUDA_FOUND OR TORCH_CUDA_LIBRARIES)
    set(_torch_has_cuda ON)
  endif()
  find_package(CUDAToolkit QUIET)
  find_path(NCCL_INCLUDE_DIR nccl.h
    HINTS $ENV{NCCL_HOME}/include ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include)
  find_library(NCCL_LIBRARY nccl
    HINTS $ENV{NCCL_HOME}/lib $ENV{NCCL_HOME}/lib64 ${CUDAToolkit_LIBRARY_DIR} /usr/local/cuda/lib64)
  if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
    if(_torch_has_cuda)
      set(CVX_HAVE_CUDA ON)
    elseif(TARGET CUDA::cudart)
      set(CVX_NCCL_LINK_CHECK ON)
    endif()
  endif()
  if(CVX_WITH_CUDA STREQUAL "ON" AND NOT CVX_HAVE_CUDA)
    message(FATAL_ERROR "CVX_WITH_CUDA=ON but libtorch has no CUDA or NCCL was not found "
      "(torch CUDA: ${_torch_has_cuda}; set NCCL_HOME to the NCCL prefix).")
  endif()
endif()
if(CVX_HAVE_CUDA)
  message(STATUS "cvx: torch ${Torch_VERSION}, CUDA/NCCL support: ON (NCCL ${NCCL_LIBRARY})")
elseif(CVX_NCCL_LINK_CHECK)
  message(STATUS "cvx: torch ${Torch_VERSION}, CUDA/NCCL support: OFF (CPU libtorch); CUDA toolkit "
    "${CUDAToolkit_VERSION} and NCCL found: cvx_nccl_link_check compiles and links the NCCL communicator "
    "(never runs it)")
else()
  message(STATUS "cvx: torch ${Torch_VERSION}, CUDA/NCCL support: OFF")
endif()

add_library(cvx_deps INTERFACE)
if(CVX_GPU_KIT)
  target_link_libraries(cvx_deps INTERFACE
    ${TORCH_LIBRARIES} MPI::MPI_C Boost::log Boost::program_options nlohmann_json::nlohmann_json Threads::Threads)
  target_compile_definitions(cvx_deps INTERFACE BOOST_LOG_DYN_LINK)
else()
  target_link_libraries(cvx_deps INTERFACE
    ${TORCH_LIBRARIES} MPI::MPI_C
    Boost::log Boost::log_setup Boost::program_options
    nlohmann_json::nlohmann_json PkgConfig::LIBAV Threads::Threads protobuf::libprotobuf-lite
    ${HDF5_C_LIBRARIES})
  target_include_directories(cvx_deps SYSTEM INTERFACE ${HDF5_C_INCLUDE_DIRS})
  target_compile_definitions(cvx_deps INTERFACE BOOST_LOG_DYN_LINK ${HDF5_C_DEFINITIONS})
endif()
if(CVX_HAVE_CUDA)
  target_include_directories(cvx_deps SYSTEM INTERFACE ${NCCL_INCLUDE_DIR})
  target_link_libraries(cvx_deps INTERFACE ${NCCL_LIBRARY})
  if(TARGET CUDA::cudart)
    target_link_libraries(cvx_deps INTERFACE CUDA::cudart)
  endif()
  target_compile_definitions(cvx_deps INTERFACE CVX_WITH_CUDA=1 CVX_WITH_NCCL=1)
endif()
# torch's flags carry the C++ ABI choice, which everything we link must share.
separate_arguments(_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
target_compile_options(cvx_deps INTERFACE ${_torch_flags})
