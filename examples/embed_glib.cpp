// zreap inside a GLib main loop: a GSource whose prepare, check and dispatch are
// loop::prepare, the revents GLib polled, and loop::dispatch. The program keeps its
// GMainLoop (and its other sources: a GLib timer here) and gets zreap's child watching.
//
//   embed_glib [backend]
//
// Starts three children that exit with 1, 2 and 3, prints each exit, and quits the GLib
// loop when all three came; exits 0 if they came with the right codes and GLib's own timer
// kept running meanwhile (non-zero otherwise: the test suite runs it).
//
// zmq sockets are left to the host here: a socket's ZMQ_FD is edge-triggered and would need
// the ZMQ_EVENTS dance that zmq_poll does. Fds, timers, signals and children are what a GLib
// program gets from zreap.

#include <glib.h>

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include <zreap/zreap.hpp>

namespace {

// The GSource: GLib allocates it with room for these fields after the GSource header.
struct zreap_source {
    GSource base;
    zreap::loop* lp;
    std::vector<zmq_pollitem_t>* items;
    std::vector<gpointer>* tags;
};

gboolean zs_prepare(GSource* g, gint* timeout) {
    auto* s = reinterpret_cast<zreap_source*>(g);
    for (gpointer tag : *s->tags)
        g_source_remove_unix_fd(g, tag);
    s->tags->clear();
    s->items->clear();
    *timeout = s->lp->prepare(*s->items);
    for (const zmq_pollitem_t& it : *s->items) {
        const int cond =
            (it.events & ZMQ_POLLIN ? G_IO_IN : 0) | (it.events & ZMQ_POLLOUT ? G_IO_OUT : 0);
        s->tags->push_back(g_source_add_unix_fd(g, it.fd, static_cast<GIOCondition>(cond)));
    }
    return FALSE;  // GLib polls, with *timeout as this source's longest wait
}

gboolean zs_check(GSource*) {
    return TRUE;  // dispatch after every poll: loop::dispatch must follow every prepare
}

gboolean zs_dispatch(GSource* g, GSourceFunc, gpointer) {
    auto* s = reinterpret_cast<zreap_source*>(g);
    for (std::size_t i = 0; i < s->items->size(); ++i) {
        const int got = g_source_query_unix_fd(g, (*s->tags)[i]);
        short z = 0;
        if (got & G_IO_IN)
            z |= ZMQ_POLLIN;
        if (got & G_IO_OUT)
            z |= ZMQ_POLLOUT;
        if (got & (G_IO_ERR | G_IO_HUP | G_IO_NVAL))
            z |= ZMQ_POLLERR;
        (*s->items)[i].revents = z;
    }
    s->lp->dispatch(s->items->data(), s->items->size());
    return G_SOURCE_CONTINUE;
}

GSourceFuncs zs_funcs = {zs_prepare, zs_check, zs_dispatch, nullptr, nullptr, nullptr};

}  // namespace

int main(int argc, char** argv) try {
    std::optional<zreap::backend> chosen;
    if (argc > 1 && !(chosen = zreap::backend_from_string(argv[1]))) {
        std::fprintf(stderr, "embed_glib: unknown backend '%s'\n", argv[1]);
        return 2;
    }
    zreap::loop children = chosen ? zreap::loop(*chosen) : zreap::loop();
    GMainLoop* main_loop = g_main_loop_new(nullptr, FALSE);

    std::vector<zmq_pollitem_t> items;
    std::vector<gpointer> tags;
    GSource* g = g_source_new(&zs_funcs, sizeof(zreap_source));
    auto* zs = reinterpret_cast<zreap_source*>(g);
    zs->lp = &children;
    zs->items = &items;
    zs->tags = &tags;
    g_source_attach(g, nullptr);

    int ticks = 0;
    g_timeout_add(
        5,
        [](gpointer p) -> gboolean {
            ++*static_cast<int*>(p);
            return G_SOURCE_CONTINUE;
        },
        &ticks);

    int exits = 0, codes = 0;
    for (int code = 1; code <= 3; ++code) {
        zreap::spawn_options o;
        // The children outlive a few GLib timer ticks.
        o.argv = {"/bin/sh", "-c",
                  "sleep 0.0" + std::to_string(code * 3) + "; exit " + std::to_string(code)};
        (void)zreap::spawn(children, o, [&](const zreap::exit_status& s) {
            std::printf("%s\n", zreap::to_string(s).c_str());
            codes += s.exit_code();
            if (++exits == 3)
                g_main_loop_quit(main_loop);
        });
    }
    // A bound, so that a lost exit fails instead of hanging.
    g_timeout_add_seconds(
        20,
        [](gpointer l) -> gboolean {
            std::fprintf(stderr, "embed_glib: the exits did not come within 20 s\n");
            g_main_loop_quit(static_cast<GMainLoop*>(l));
            return G_SOURCE_REMOVE;
        },
        main_loop);
    g_main_loop_run(main_loop);
    std::printf("GLib timer ticks meanwhile: %d\n", ticks);

    g_source_destroy(g);
    g_source_unref(g);
    g_main_loop_unref(main_loop);
    return exits == 3 && codes == 6 && ticks > 0 ? 0 : 1;
} catch (const std::exception& e) {
    std::fprintf(stderr, "embed_glib: %s\n", e.what());
    return 1;
}
