# autoglm: the CLI, one static binary on an empty root.
FROM scratch
COPY rootfs/ /
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/autoglm"]
