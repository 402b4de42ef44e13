# autoglm-agent: a dynamic binary with the loader and the few libraries it
# links, because it opens NVML with dlopen: the NVIDIA container runtime
# mounts libnvidia-ml.so.1 into the container, which a static binary could
# not load. Runs as the autoglm user; an agent whose exec tasks run as
# another user (exec.run_as) needs to start as root instead (docs/agent.md).
FROM scratch
COPY rootfs/ /
COPY --chown=10001:10001 data/ /var/lib/autoglm-agent/
USER 10001:10001
# Where the NVIDIA runtime puts the driver's libraries; there is no
# ld.so.cache on an empty root.
ENV LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu:/usr/lib64 \
    AUTOGLM_HTTP_LISTEN=0.0.0.0:9102
EXPOSE 9102
ENTRYPOINT ["/usr/local/bin/autoglm-agent"]
