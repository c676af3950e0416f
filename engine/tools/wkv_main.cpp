// `wkv` command-line tool (work in progress: commands are added as the engine grows).
#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  if (argc >= 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    std::puts("usage: wkv COMMAND ...");
    return 0;
  }
  std::fprintf(stderr, "wkv: unknown command\n");
  return 2;
}
