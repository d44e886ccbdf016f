#pragma once

// Whole multipart messages as vectors of strings, for the example programs.

#include <zmq.h>

#include <cerrno>
#include <string>
#include <vector>

namespace examples {

// Receives one whole message into @p frames: its first frame with @p flags (ZMQ_DONTWAIT to
// poll), the others as they come (libzmq delivers a message whole, so they are there).
// Returns false, with @p frames empty, if no message could be received.
inline bool recv_frames(void* sock, std::vector<std::string>& frames, int flags) {
    frames.clear();
    int more = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock, frames.empty() ? flags : 0) < 0) {
            int e = zmq_errno();
            zmq_msg_close(&m);
            if (e == EINTR && !frames.empty())
                continue;  // a signal in the middle of a message: the rest is still there
            frames.clear();
            return false;
        }
        frames.emplace_back(static_cast<const char*>(zmq_msg_data(&m)), zmq_msg_size(&m));
        more = zmq_msg_more(&m);
        zmq_msg_close(&m);
    }
    return true;
}

// Sends @p frames as one message, each frame with @p flags (and ZMQ_SNDMORE but the last),
// retrying on EINTR. Returns false at the first frame libzmq refuses.
inline bool send_frames(void* sock, const std::vector<std::string>& frames, int flags = 0) {
    for (std::size_t i = 0; i < frames.size(); ++i) {
        int f = flags | (i + 1 < frames.size() ? ZMQ_SNDMORE : 0);
        while (zmq_send(sock, frames[i].data(), frames[i].size(), f) < 0) {
            if (zmq_errno() != EINTR)
                return false;
        }
    }
    return true;
}

}  // namespace examples
