{
  # The m1cuda addon: node-gyp builds addon.cpp/matmul.cpp with the host compiler and every .cu file
  # with nvcc (the rule below): native sm_90a code for Hopper plus compute_80 PTX, which the driver
  # compiles at load time on other GPUs of compute capability 8.0 and up.
  # Build: npm run build:cuda (needs nvcc and the cuBLAS headers/libraries under CUDA_HOME).
  "variables": {
    "cuda_home%": "<!(node -p \"process.env.CUDA_HOME || '/usr/local/cuda'\")"
  },
  "targets": [
    {
      "target_name": "m1cuda",
      "sources": ["src/addon.cpp", "src/matmul.cpp", "src/kernels.cu", "src/flash_attention.cu", "src/flash_attention_tc.cu", "src/decode_attention.cu", "src/sampling.cu"],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<(cuda_home)/include"
      ],
      "defines": ["NAPI_CPP_EXCEPTIONS", "NAPI_VERSION=8"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-std=gnu++20"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-O3"],
      "libraries": [
        "-L<(cuda_home)/lib64",
        "-Wl,-rpath,<(cuda_home)/lib64",
        "-lcublasLt",
        "-lcublas",
        "-lcudart"
      ],
      "rules": [
        {
          "rule_name": "nvcc",
          "extension": "cu",
          "inputs": ["<(RULE_INPUT_PATH)"],
          "outputs": ["<(INTERMEDIATE_DIR)/<(RULE_INPUT_ROOT).o"],
          "message": "nvcc <(RULE_INPUT_PATH)",
          "process_outputs_as_sources": 1,
          "action": [
            "<(cuda_home)/bin/nvcc", "-std=c++17", "-O3", "-Xcompiler", "-fPIC",
            "-gencode", "arch=compute_90a,code=sm_90a",
            "-gencode", "arch=compute_80,code=compute_80",
            "-c", "<@(_inputs)", "-o", "<@(_outputs)"
          ]
        }
      ]
    }
  ]
}
