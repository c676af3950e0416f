// Helpers shared by the `wkv` subcommands.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "cli_args.h"
#include "wkv/engine.h"

namespace wkv::cli {

// Set by SIGINT (Ctrl-C); long operations poll it and stop cleanly.
extern std::atomic<bool> g_interrupted;
void install_sigint_handler();

std::string model_arg(const Args& a, const char* cmd);
LoadOptions load_options(const Args& a);
std::shared_ptr<Model> load_model(const Args& a, const std::string& path);
SamplingParams sampling_from(const Args& a);
GenerateOptions generate_options(const Args& a);
std::string human_bytes(double bytes);
std::string read_text_file(const std::string& path);

int cmd_ppl(const Args& a);
int cmd_quantize(const Args& a);
int cmd_bench(const Args& a);
int cmd_synth(const Args& a);
int cmd_summarize(const Args& a);
int cmd_compare(const Args& a);

}  // namespace wkv::cli
