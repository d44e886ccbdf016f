#pragma once

// Who may use examples/jobserver and what they may run: the endpoint check that keeps a
// server without CURVE off the network, the authorized CURVE client keys and the ZAP
// handler that applies them, and the optional allow-list of programs. docs/security.md
// explains the threat model these serve.

#include <arpa/inet.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "curve_keys.hpp"
#include "zmq_frames.hpp"

namespace examples {

// True for an endpoint that only this host can connect to: ipc:// and inproc://, or tcp://
// on a loopback address (127.0.0.0/8, [::1]). Interface names ("lo"), host names, "*",
// 0.0.0.0 and every other address are not, nor is anything that cannot be parsed. Sets
// @p ipv6 when the host is a bracketed IPv6 address (libzmq needs ZMQ_IPV6 to bind it).
inline bool local_only_endpoint(const std::string& ep, bool& ipv6) {
    ipv6 = false;
    if (ep.rfind("ipc://", 0) == 0 || ep.rfind("inproc://", 0) == 0)
        return true;
    if (ep.rfind("tcp://", 0) != 0)
        return false;
    std::string rest = ep.substr(6);
    std::size_t colon = rest.rfind(':');
    if (colon == std::string::npos || rest.find(';') != std::string::npos)
        return false;
    std::string host = rest.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
        ipv6 = true;
        in6_addr a6;
        return ::inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &a6) == 1 &&
               IN6_IS_ADDR_LOOPBACK(&a6);
    }
    in_addr a4;
    return ::inet_pton(AF_INET, host.c_str(), &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

// Where execvp() would find @p prog: itself if it contains a slash, else the first PATH
// entry holding an executable regular file of that name. Empty if there is none.
inline std::string find_program(const std::string& prog) {
    auto ok = [](const std::string& path) {
        struct stat st;
        return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
               ::access(path.c_str(), X_OK) == 0;
    };
    if (prog.find('/') != std::string::npos)
        return ok(prog) ? prog : std::string();
    const char* path = std::getenv("PATH");
    std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
    std::size_t start = 0;
    for (;;) {
        std::size_t colon = dirs.find(':', start);
        std::string dir = dirs.substr(start, colon - start);
        std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + prog;
        if (ok(candidate))
            return candidate;
        if (colon == std::string::npos)
            return std::string();
        start = colon + 1;
    }
}

inline std::string trimmed(const std::string& s) {
    std::size_t b = s.find_first_not_of(" \t\r");
    if (b == std::string::npos)
        return std::string();
    return s.substr(b, s.find_last_not_of(" \t\r") - b + 1);
}

// The programs jobs may run (--allow-programs FILE): one absolute path per line, '#'
// comments. Entries and requests are compared after realpath(), so a symlink in the file
// or in PATH names the program it points to.
class program_allow_list {
  public:
    // Throws std::runtime_error for a relative path or a file that does not exist.
    explicit program_allow_list(const std::string& path) {
        std::ifstream in(path);
        if (!in)
            throw std::runtime_error("allow-list " + path + ": " +
                                     std::error_code(errno, std::generic_category()).message());
        std::string line;
        for (int number = 1; std::getline(in, line); ++number) {
            line = trimmed(line);
            if (line.empty() || line[0] == '#')
                continue;
            std::string where = "allow-list " + path + " line " + std::to_string(number) + ": ";
            if (line[0] != '/')
                throw std::runtime_error(where + "not an absolute path: " + line);
            std::string real = resolved(line);
            if (real.empty())
                throw std::runtime_error(where + line + ": " +
                                         std::error_code(errno, std::generic_category()).message());
            allowed_.insert(real);
        }
    }
    // True if @p found (a path from find_program) is one of the listed programs.
    bool allows(const std::string& found) const {
        std::string real = resolved(found);
        return !real.empty() && allowed_.count(real) != 0;
    }
    std::size_t size() const noexcept { return allowed_.size(); }

  private:
    static std::string resolved(const std::string& p) {
        char buf[PATH_MAX];
        return ::realpath(p.c_str(), buf) ? std::string(buf) : std::string();
    }
    std::set<std::string> allowed_;
};

// The CURVE public keys allowed to connect (--curve-clients FILE). Each line is a Z85 key
// with an optional name for the log ("KEY alice"), or a `public-key = "KEY"` line as in a
// .pub file, so `cat alice.pub >> clients` works; '#' starts a comment line. The file is
// read again when it changes (checked at each connection attempt), so a key can be added
// or revoked without a restart; connections already made are not affected. A file that
// cannot be read or parsed then authorizes nobody until it is fixed.
class authorized_keys {
  public:
    // Reads the file; throws std::runtime_error if that fails at start-up.
    explicit authorized_keys(std::string path) : path_(std::move(path)) {
        std::string error = reload();
        if (!error.empty())
            throw std::runtime_error(error);
    }

    // The name given for @p z85 (the key itself if none), or nothing if it is not listed.
    // Re-reads the file first if it changed; @p error says why it could not be read.
    std::optional<std::string> lookup(const std::string& z85, std::string& error) {
        struct stat st;
        if (::stat(path_.c_str(), &st) != 0 || changed(st))
            error = reload();
        auto it = keys_.find(z85);
        if (it == keys_.end())
            return std::nullopt;
        return it->second.empty() ? z85 : it->second;
    }
    std::size_t size() const noexcept { return keys_.size(); }

  private:
    bool changed(const struct stat& st) const {
        return st.st_ino != seen_.st_ino || st.st_size != seen_.st_size ||
               st.st_mtim.tv_sec != seen_.st_mtim.tv_sec ||
               st.st_mtim.tv_nsec != seen_.st_mtim.tv_nsec;
    }

    // Returns an error message, empty on success. On failure no key is authorized.
    std::string reload() {
        keys_.clear();
        seen_ = {};
        std::ifstream in(path_);
        if (!in || ::stat(path_.c_str(), &seen_) != 0)
            return "client key file " + path_ + ": " +
                   std::error_code(errno, std::generic_category()).message();
        std::map<std::string, std::string> keys;
        std::string line;
        for (int number = 1; std::getline(in, line); ++number) {
            line = trimmed(line);
            if (line.empty() || line[0] == '#')
                continue;
            std::string key, name;
            if (line.rfind("public-key", 0) == 0) {
                std::size_t open = line.find('"');
                std::size_t close = open == std::string::npos ? open : line.find('"', open + 1);
                if (close != std::string::npos)
                    key = line.substr(open + 1, close - open - 1);
            } else {
                std::size_t space = line.find_first_of(" \t");
                key = line.substr(0, space);
                if (space != std::string::npos)
                    name = trimmed(line.substr(space));
            }
            if (!valid_curve_key(key)) {
                seen_ = {};
                return "client key file " + path_ + " line " + std::to_string(number) +
                       ": not a 40-character Z85 CURVE public key";
            }
            keys[key] = name;
        }
        keys_ = std::move(keys);
        return std::string();
    }

    std::string path_;
    struct stat seen_ = {};
    std::map<std::string, std::string> keys_;  // Z85 key -> name, maybe empty
};

// A ZAP handler (ZeroMQ RFC 27) on inproc://zeromq.zap.01, answered by the server's own
// loop: libzmq asks it about every CURVE handshake, and a client whose key is not
// authorized is refused before any of its messages reaches the server. An accepted
// client's messages carry its Z85 public key as the "User-Id" property.
class zap_handler {
  public:
    using logger = std::function<void(const std::string&)>;

    // Binds the handler; it must exist before the CURVE socket binds. Throws
    // std::system_error.
    // Refusals always go to @p log; accepted connections too unless @p quiet.
    zap_handler(void* ctx, authorized_keys& keys, logger log, bool quiet)
        : keys_(keys), log_(std::move(log)), quiet_(quiet) {
        sock_ = zmq_socket(ctx, ZMQ_REP);
        int linger = 0;
        zmq_setsockopt(sock_, ZMQ_LINGER, &linger, sizeof linger);
        if (!sock_ || zmq_bind(sock_, "inproc://zeromq.zap.01") != 0) {
            int e = zmq_errno();
            if (sock_)
                zmq_close(sock_);
            throw std::system_error(e, std::generic_category(), "ZAP handler: bind");
        }
    }
    ~zap_handler() { zmq_close(sock_); }
    zap_handler(const zap_handler&) = delete;
    zap_handler& operator=(const zap_handler&) = delete;

    void* socket() const noexcept { return sock_; }
    std::uint64_t refused() const noexcept { return refused_; }

    // Answers every request waiting now.
    void on_ready() {
        std::vector<std::string> req;
        while (recv_frames(sock_, req, ZMQ_DONTWAIT)) {
            std::string status = "400", text, user;
            if (req.size() < 7 || req[0] != "1.0") {
                status = "500";
                text = "malformed ZAP request";
            } else if (req[5] != "CURVE" || req[6].size() != 32) {
                text = "CURVE required";
            } else {
                char z85[41];
                zmq_z85_encode(z85, reinterpret_cast<const std::uint8_t*>(req[6].data()), 32);
                std::string error;
                auto name = keys_.lookup(z85, error);
                if (!error.empty())
                    log_("jobserver: " + error + "; refusing every client until it is fixed");
                if (name) {
                    status = "200";
                    text = "OK";
                    user = z85;
                    if (!quiet_)
                        log_("jobserver: client " + *name + " connected from " + req[3]);
                } else {
                    text = "key not authorized";
                    ++refused_;
                    log_("jobserver: refused a connection from " + req[3] + ": key " + z85 +
                         " is not authorized");
                }
            }
            std::string request_id = req.size() > 1 ? req[1] : std::string();
            send_frames(sock_, {"1.0", request_id, status, text, user, ""});
        }
    }

  private:
    authorized_keys& keys_;
    logger log_;
    bool quiet_;
    void* sock_ = nullptr;
    std::uint64_t refused_ = 0;
};

}  // namespace examples
