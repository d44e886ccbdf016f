#pragma once

// CURVE key files for examples/jobserver and examples/jobclient.
//
// A key file holds the Z85 text of a key pair, one key per line:
//
//     public-key = "<40 characters of Z85>"
//     secret-key = "<40 characters of Z85>"
//
// Lines are found wherever they are in the file, so czmq's zcert files, which store the
// keys the same way (indented, in a "curve" section), can be read as they are.
// PREFIX.key has both keys and must be readable by its owner only; PREFIX.pub has the
// public key alone and is what the other side gets.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <system_error>

namespace examples {

// A key pair as Z85 text (40 characters each); secret_key is empty for a public key file.
struct curve_pair {
    std::string public_key;
    std::string secret_key;
};

// True if @p z85 is the 40-character Z85 text of a 32-byte CURVE key.
inline bool valid_curve_key(const std::string& z85) {
    if (z85.size() != 40)
        return false;
    unsigned char raw[32];
    return zmq_z85_decode(raw, z85.c_str()) != nullptr;
}

// Reads the key file @p path. With @p need_secret, the file must hold a secret key and be
// closed to group and others (like ssh, a secret readable by other users is refused, not
// used). Throws std::runtime_error naming the file and what is wrong with it.
inline curve_pair read_key_file(const std::string& path, bool need_secret) {
    auto fail = [&](const std::string& why) -> curve_pair {
        throw std::runtime_error("key file " + path + ": " + why);
    };
    std::ifstream in(path);
    if (!in)
        return fail(std::error_code(errno, std::generic_category()).message());
    curve_pair keys;
    std::string line;
    while (std::getline(in, line)) {
        std::size_t eq = line.find('=');
        if (eq == std::string::npos)
            continue;
        std::string name = line.substr(0, eq);
        name.erase(0, name.find_first_not_of(" \t"));
        name.erase(name.find_last_not_of(" \t") + 1);
        std::size_t open = line.find('"', eq);
        std::size_t close = open == std::string::npos ? open : line.find('"', open + 1);
        if (close == std::string::npos)
            continue;
        std::string value = line.substr(open + 1, close - open - 1);
        if (name == "public-key" || name == "secret-key") {
            if (!valid_curve_key(value))
                return fail(name + " is not a 40-character Z85 CURVE key");
            (name == "public-key" ? keys.public_key : keys.secret_key) = value;
        }
    }
    if (keys.public_key.empty())
        return fail("no public-key line");
    if (need_secret) {
        if (keys.secret_key.empty())
            return fail("no secret-key line (this is a public key file; give the .key file)");
        struct stat st;
        if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 077))
            return fail("readable or writable by group or others; chmod 600 it first");
        char derived[41];
        if (zmq_curve_public(derived, keys.secret_key.c_str()) != 0 || keys.public_key != derived)
            return fail("its public-key does not belong to its secret-key");
    }
    return keys;
}

// Makes a new key pair and writes PREFIX.key (mode 0600, both keys) and PREFIX.pub (mode
// 0644, the public key). Refuses to overwrite either file. Throws std::system_error.
inline curve_pair write_key_files(const std::string& prefix) {
    curve_pair keys;
    char pub[41], sec[41];
    if (zmq_curve_keypair(pub, sec) != 0)
        throw std::system_error(zmq_errno(), std::generic_category(),
                                "zmq_curve_keypair (libzmq built without CURVE?)");
    keys.public_key = pub;
    keys.secret_key = sec;
    auto write = [&](const std::string& path, mode_t mode, bool with_secret) {
        int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
        if (fd < 0)
            throw std::system_error(errno, std::generic_category(), "create " + path);
        std::string text = std::string("# CURVE ") + (with_secret ? "key pair" : "public key") +
                           " for jobserver / jobclient" +
                           (with_secret ? "; keep this file secret\n" : "\n") + "public-key = \"" +
                           keys.public_key + "\"\n";
        if (with_secret)
            text += "secret-key = \"" + keys.secret_key + "\"\n";
        std::size_t done = 0;
        while (done < text.size()) {
            ssize_t n = ::write(fd, text.data() + done, text.size() - done);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                int e = errno;
                ::close(fd);
                throw std::system_error(e, std::generic_category(), "write " + path);
            }
            done += static_cast<std::size_t>(n);
        }
        if (::close(fd) != 0 && errno != EINTR)
            throw std::system_error(errno, std::generic_category(), "close " + path);
    };
    for (const char* ext : {".key", ".pub"}) {
        if (::access((prefix + ext).c_str(), F_OK) == 0)
            throw std::system_error(EEXIST, std::generic_category(), "create " + prefix + ext);
    }
    write(prefix + ".key", 0600, true);
    write(prefix + ".pub", 0644, false);
    return keys;
}

}  // namespace examples
