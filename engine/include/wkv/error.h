// Typed errors for the engine's public API.
//
// Every failure that can be caused by user input (a file, a setting, a prompt) is reported as a
// wkv::Error whose message names the file / tensor / field and what was expected. Nothing in the
// engine calls abort() on user input.
#pragma once

#include <stdexcept>
#include <string>

namespace wkv {

enum class ErrorCode {
  invalid_argument,  // a setting or argument out of range
  not_found,         // a file or tensor that should exist does not
  io,                // the OS refused a read/write/mmap
  format,            // a file exists but its contents are malformed
  unsupported,       // a valid file asks for something we do not implement
  out_of_memory,     // host or device allocation failed
  context_full,      // the KV cache has no room for more tokens
  cancelled,         // the caller's callback asked to stop
  internal,          // a bug: an invariant of the engine itself was broken
};

const char* error_code_name(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace wkv
