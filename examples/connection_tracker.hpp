#pragma once

// Which ROUTER clients have lost their connection, so that examples/jobserver can end the
// jobs whose results nobody can receive any more.
//
// libzmq 4.3 tells a ROUTER nothing when a peer goes (ZMQ_ROUTER_NOTIFY is a draft API,
// not in Debian's build). Two stable facilities give it anyway: a socket monitor reports
// ZMQ_EVENT_ACCEPTED and ZMQ_EVENT_DISCONNECTED with the connection's fd, and each received
// message carries the fd it came in on (zmq_msg_get ZMQ_SRCFD). An fd number is reused
// after a close, so each fd counts its connections ("generations"): ACCEPTED opens the
// next one, DISCONNECTED closes the newest. A client is filed under its fd only after the
// monitor events queued so far have been read, and libzmq queues a connection's ACCEPTED
// before any of its messages can be received; so the client's real generation is never
// newer than the one it is filed under. When that generation closes, the client's own
// connection has closed too (it was that one or an older one): a client is never declared
// gone while connected. At worst a late message from an already closed connection is filed
// under a newer one and its client is declared gone when that one closes.

#include <zmq.h>

#include <cstdint>
#include <cstring>
#include <deque>
#include <map>
#include <set>
#include <string>
#include <system_error>
#include <vector>

#include "zmq_frames.hpp"

namespace examples {

class connection_tracker {
  public:
    // Starts monitoring @p router; call it before the router binds.
    connection_tracker(void* ctx, void* router) {
        const char* ep = "inproc://jobserver-monitor";
        if (zmq_socket_monitor(router, ep, ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED) != 0)
            throw std::system_error(zmq_errno(), std::generic_category(), "zmq_socket_monitor");
        sock_ = zmq_socket(ctx, ZMQ_PAIR);
        // Unlimited on our side: libzmq's I/O thread blocks on a full monitor pipe, and the
        // events are small and read every loop iteration.
        int hwm = 0, linger = 0;
        zmq_setsockopt(sock_, ZMQ_RCVHWM, &hwm, sizeof hwm);
        zmq_setsockopt(sock_, ZMQ_LINGER, &linger, sizeof linger);
        if (zmq_connect(sock_, ep) != 0) {
            int e = zmq_errno();
            zmq_close(sock_);
            throw std::system_error(e, std::generic_category(), "connect to the socket monitor");
        }
    }
    ~connection_tracker() { zmq_close(sock_); }
    connection_tracker(const connection_tracker&) = delete;
    connection_tracker& operator=(const connection_tracker&) = delete;

    void* socket() const noexcept { return sock_; }

    // Reads the monitor events waiting now; returns the clients whose connection closed.
    std::vector<std::string> drain() {
        std::vector<std::string> gone;
        for (;;) {
            std::uint16_t event = 0;
            std::int32_t fd = -1;
            if (!next_event(event, fd))
                return gone;
            fd_state& f = fds_[fd];
            if (event == ZMQ_EVENT_ACCEPTED) {
                ++f.generation;
                f.open = true;
                continue;
            }
            f.open = false;
            for (const std::string& rid : f.clients) {
                filed_.erase(rid);
                remember_gone(rid);
                gone.push_back(rid);
            }
            f.clients.clear();
        }
    }

    // A message from client @p rid came in over @p fd (ZMQ_SRCFD; -1 for inproc). Call
    // drain() after receiving it and before this. Returns false if the client is known
    // to be gone: its message is a leftover from a closed connection.
    bool message_from(const std::string& rid, int fd) {
        if (gone_set_.count(rid))
            return false;
        if (fd < 0 || filed_.count(rid))
            return true;
        fd_state& f = fds_[fd];
        if (f.generation > 0 && !f.open) {
            // The newest connection on this fd has closed, so the client's has too.
            remember_gone(rid);
            return false;
        }
        filed_.emplace(rid, fd);
        f.clients.push_back(rid);
        return true;
    }

    // Clients currently filed under a connection.
    std::size_t clients() const noexcept { return filed_.size(); }

  private:
    struct fd_state {
        std::uint64_t generation = 0;
        bool open = false;
        std::vector<std::string> clients;
    };

    bool next_event(std::uint16_t& event, std::int32_t& value) {
        // Two frames: 6 bytes (uint16 event, uint32 value, host byte order), the endpoint.
        std::vector<std::string> frames;
        while (recv_frames(sock_, frames, ZMQ_DONTWAIT)) {
            if (frames[0].size() != 6)
                continue;
            std::memcpy(&event, frames[0].data(), 2);
            std::memcpy(&value, frames[0].data() + 2, 4);
            return true;
        }
        return false;
    }

    // Late messages from gone clients are recognised for this many clients back.
    static constexpr std::size_t gone_memory = 4096;
    void remember_gone(const std::string& rid) {
        if (!gone_set_.insert(rid).second)
            return;
        gone_order_.push_back(rid);
        if (gone_order_.size() > gone_memory) {
            gone_set_.erase(gone_order_.front());
            gone_order_.pop_front();
        }
    }

    void* sock_ = nullptr;
    std::map<int, fd_state> fds_;
    std::map<std::string, int> filed_;  // client -> fd
    std::set<std::string> gone_set_;
    std::deque<std::string> gone_order_;
};

}  // namespace examples
