// cppzmq interop: zmq::socket_t and zmq::socket_ref go straight into loop::add_socket.
// Built only where <zmq.hpp> is found; zreap itself never includes it.

#include <gtest/gtest.h>

#include <string>
#include <type_traits>
#include <zmq.hpp>

#include "helpers.hpp"

using namespace zreap_test;

namespace {

template <typename T, typename = void>
struct accepted_as_socket : std::false_type {};
template <typename T>
struct accepted_as_socket<T, std::void_t<decltype(std::declval<zreap::loop&>().add_socket(
                                 std::declval<T>(), short{}, std::function<void(short)>{}))>>
    : std::true_type {};

// The overload must take sockets and nothing else that merely has a handle().
static_assert(accepted_as_socket<zmq::socket_t&>::value);
static_assert(accepted_as_socket<zmq::socket_ref>::value);
static_assert(accepted_as_socket<void*>::value);
static_assert(!accepted_as_socket<zmq::message_t&>::value);
static_assert(!accepted_as_socket<int>::value);

// Two sockets of one context, connected over inproc://@p name: bound() and connected().
class inproc_pair {
  public:
    inproc_pair(zmq::socket_type bound_type, zmq::socket_type connected_type,
                const std::string& name)
        : bound_(ctx_, bound_type), connected_(ctx_, connected_type) {
        bound_.bind("inproc://" + name);
        connected_.connect("inproc://" + name);
    }
    zmq::socket_t& bound() { return bound_; }
    zmq::socket_t& connected() { return connected_; }

  private:
    zmq::context_t ctx_;
    zmq::socket_t bound_, connected_;
};

TEST(Cppzmq, SocketRoundTrip) {
    inproc_pair pair(zmq::socket_type::rep, zmq::socket_type::req, "cppzmq");
    zmq::socket_t& rep = pair.bound();
    zmq::socket_t& req = pair.connected();

    zreap::loop lp;
    std::string reply;
    short rep_revents = 0;
    lp.add_socket(rep, ZMQ_POLLIN, [&](short revents) {
        rep_revents = revents;
        zmq::message_t msg;
        ASSERT_TRUE(rep.recv(msg, zmq::recv_flags::dontwait));
        rep.send(zmq::buffer("re:" + msg.to_string()), zmq::send_flags::none);
    });
    lp.add_socket(zmq::socket_ref(req), ZMQ_POLLIN, [&](short) {
        zmq::message_t msg;
        ASSERT_TRUE(req.recv(msg, zmq::recv_flags::dontwait));
        reply = msg.to_string();
    });
    for (int i = 0; i < 3; ++i) {
        reply.clear();
        std::string text = "hello" + std::to_string(i);
        req.send(zmq::buffer(text), zmq::send_flags::none);
        ASSERT_TRUE(run_until(
            lp, [&] { return !reply.empty(); }, 5s));
        EXPECT_EQ(reply, "re:" + text);
        EXPECT_TRUE(rep_revents & ZMQ_POLLIN);
    }
}

// The source polls the libzmq socket itself: removing it stops the callbacks even though
// the cppzmq object lives on.
TEST(Cppzmq, RemoveStopsCallbacks) {
    inproc_pair pair(zmq::socket_type::pull, zmq::socket_type::push, "cppzmq-remove");
    zmq::socket_t& pull = pair.bound();
    zmq::socket_t& push = pair.connected();

    zreap::loop lp;
    int calls = 0;
    zreap::source_id id = lp.add_socket(pull, ZMQ_POLLIN, [&](short) { ++calls; });
    push.send(zmq::str_buffer("x"), zmq::send_flags::none);
    ASSERT_TRUE(run_until(
        lp, [&] { return calls > 0; }, 5s));
    lp.remove(id);
    const int seen = calls;
    lp.add_timer(50ms, 0ms, [] {});  // something to wait for, so the loop has a source
    lp.run_once(200ms);
    EXPECT_EQ(calls, seen) << "a removed socket source was called";
}

}  // namespace
