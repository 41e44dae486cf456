// Device discovery, memory and transfers on the CUDA runtime, and the shared runtime state of
// kernels/cuda/runtime.cuh (stream, cuBLAS/cuBLASLt handles, workspace, scratch, TF32 switch).
#include "kernels/cuda/check.cuh"
#include "kernels/cuda/runtime.cuh"
#include "kernels/device.h"

#include <atomic>
#include <filesystem>
#include <mutex>

namespace dsk {

bool cuda_compiled() { return true; }

std::string cuda_unavailable_reason() {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls are not poisoned
    // With no driver at all the runtime says "CUDA driver version is insufficient for CUDA runtime version" (it
    // found none new enough), which sends a user of a machine without a GPU looking for a driver update. The
    // kernel module's /proc entry tells the two cases apart.
    const bool no_driver = err == cudaErrorInsufficientDriver || err == cudaErrorNoDevice;
    // (WSL2 has no /proc entry but a /dev/dxg: there the runtime's words stand.)
    if (no_driver && !std::filesystem::exists("/proc/driver/nvidia/version") && !std::filesystem::exists("/dev/dxg"))
      return "no NVIDIA driver found (no /proc/driver/nvidia)";
    return fmt::format("no usable CUDA device ({})", cudaGetErrorString(err));
  }
  if (n == 0) return "no CUDA device found";
  return "";
}

std::vector<GpuInfo> cuda_devices() {
  std::vector<GpuInfo> out;
  if (!cuda_unavailable_reason().empty()) return out;
  int n = 0, driver = 0;
  DSK_CUDA_CHECK(cudaGetDeviceCount(&n));
  DSK_CUDA_CHECK(cudaDriverGetVersion(&driver));
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p{};
    DSK_CUDA_CHECK(cudaGetDeviceProperties(&p, i));
    int shared = 0;
    DSK_CUDA_CHECK(cudaDeviceGetAttribute(&shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, i));
    out.push_back(GpuInfo{i, p.name, p.multiProcessorCount, p.major, p.minor, p.totalGlobalMem, driver, shared});
  }
  return out;
}

namespace cuda {

namespace {

// Everything is created on first use and kept until the process exits.
struct Runtime {
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  cublasLtHandle_t lt = nullptr;
  void* lt_workspace = nullptr;
  void* blas_workspace = nullptr;
  int sm_count = 0;

  Runtime() {
    int dev = 0;
    DSK_CUDA_CHECK(cudaGetDevice(&dev));
    DSK_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, dev));
    // A blocking stream (not cudaStreamNonBlocking): any stray legacy-default-stream call (a plain cudaMemcpy
    // in a test or a library) still orders itself with dsk's work instead of racing it.
    DSK_CUDA_CHECK(cudaStreamCreate(&stream));
    DSK_CUBLAS_CHECK(cublasCreate(&blas));
    DSK_CUBLAS_CHECK(cublasSetStream(blas, stream));
    // Default math: fp32 GEMMs stay fp32 unless a call passes CUBLAS_COMPUTE_32F_FAST_TF32 (see set_tf32).
    DSK_CUBLAS_CHECK(cublasSetMathMode(blas, CUBLAS_DEFAULT_MATH));
    // cuBLAS's own workspace, set explicitly so it is stream-ordered (and graph-capturable later).
    DSK_CUDA_CHECK(cudaMalloc(&blas_workspace, kLtWorkspaceBytes));
    DSK_CUBLAS_CHECK(cublasSetWorkspace(blas, blas_workspace, kLtWorkspaceBytes));
    DSK_CUBLASLT_CHECK(cublasLtCreate(&lt));
    DSK_CUDA_CHECK(cudaMalloc(&lt_workspace, kLtWorkspaceBytes));
  }
};

Runtime& runtime() {
  static Runtime* r = new Runtime();  // never destroyed: see runtime.cuh
  return *r;
}

std::atomic<bool> g_tf32{false};
std::atomic<ExpertTile> g_expert_tile{ExpertTile::kAuto};
std::atomic<ExpertLoads> g_expert_loads{ExpertLoads::kAsync};
std::atomic<Math> g_expert_math{Math::kAuto};
std::atomic<Math> g_attention_math{Math::kAuto};
std::atomic<DecodeBlock> g_decode_block{DecodeBlock::kAuto};
std::atomic<BackwardDq> g_backward_dq{BackwardDq::kFused};

std::mutex g_scratch_mutex;
void* g_scratch = nullptr;
size_t g_scratch_bytes = 0;

}  // namespace

cudaStream_t stream() { return runtime().stream; }
cublasHandle_t cublas() { return runtime().blas; }
cublasLtHandle_t cublaslt() { return runtime().lt; }
void* lt_workspace() { return runtime().lt_workspace; }
int sm_count() { return runtime().sm_count; }

void* scratch(size_t bytes) {
  std::lock_guard<std::mutex> lock(g_scratch_mutex);
  if (bytes > g_scratch_bytes) {
    runtime();
    // No queued kernel may still read the old buffer: wait for dsk's stream explicitly rather than rely on
    // cudaFree's implicit synchronization.
    if (g_scratch) {
      DSK_CUDA_CHECK(cudaStreamSynchronize(stream()));
      DSK_CUDA_CHECK(cudaFree(g_scratch));
    }
    g_scratch = nullptr;
    size_t want = bytes < (size_t(1) << 20) ? (size_t(1) << 20) : bytes + bytes / 4;  // grow with headroom
    DSK_CUDA_CHECK(cudaMalloc(&g_scratch, want));
    g_scratch_bytes = want;
  }
  return g_scratch;
}

void set_tf32(bool on) { g_tf32.store(on); }
bool tf32_enabled() { return g_tf32.load(); }
bool tf32_tensor_cores() {
  static const bool yes = [] {
    int dev = 0;
    DSK_CUDA_CHECK(cudaGetDevice(&dev));
    cudaDeviceProp p;
    DSK_CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
    return p.major >= 8;
  }();
  return yes;
}

void set_expert_tile(ExpertTile tile) { g_expert_tile.store(tile); }
ExpertTile expert_tile() { return g_expert_tile.load(); }
void set_expert_loads(ExpertLoads loads) { g_expert_loads.store(loads); }
ExpertLoads expert_loads() { return g_expert_loads.load(); }
void set_expert_math(Math math) { g_expert_math.store(math); }
Math expert_math() { return g_expert_math.load(); }
void set_attention_math(Math math) { g_attention_math.store(math); }
Math attention_math() { return g_attention_math.load(); }
void set_decode_block(DecodeBlock block) { g_decode_block.store(block); }
DecodeBlock decode_block() { return g_decode_block.load(); }
void set_backward_dq(BackwardDq how) { g_backward_dq.store(how); }
BackwardDq backward_dq() { return g_backward_dq.load(); }

// Transfers go through dsk's stream so they are ordered with its kernels. Host<->device copies wait for
// completion (the host buffer may be reused or freed as soon as they return); device copies and memsets are
// asynchronous like kernels.
void* malloc_device(size_t bytes) {
  void* p = nullptr;
  if (bytes == 0) return nullptr;
  DSK_CUDA_CHECK(cudaMalloc(&p, bytes));
  return p;
}
void free_device(void* p) {
  if (p) DSK_CUDA_CHECK(cudaFree(p));
}
void copy_to_device(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  DSK_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream()));
  DSK_CUDA_CHECK(cudaStreamSynchronize(stream()));
}
void copy_to_host(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  DSK_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream()));
  DSK_CUDA_CHECK(cudaStreamSynchronize(stream()));
}
void copy_device(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  DSK_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream()));
}
void memset_device(void* p, int value, size_t bytes) {
  if (bytes == 0) return;
  DSK_CUDA_CHECK(cudaMemsetAsync(p, value, bytes, stream()));
}
void synchronize() {
  DSK_CUDA_CHECK(cudaStreamSynchronize(stream()));
  DSK_CUDA_CHECK(cudaGetLastError());
}

void* record_marker() {
  cudaEvent_t e = nullptr;
  DSK_CUDA_CHECK(cudaEventCreate(&e));
  DSK_CUDA_CHECK(cudaEventRecord(e, stream()));
  return e;
}
float marker_elapsed_ms(void* from, void* to) {
  float ms = 0.0f;
  DSK_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(from), static_cast<cudaEvent_t>(to)));
  return ms;
}
void destroy_marker(void* marker) {
  if (marker) DSK_CUDA_CHECK(cudaEventDestroy(static_cast<cudaEvent_t>(marker)));
}

}  // namespace cuda
}  // namespace dsk
