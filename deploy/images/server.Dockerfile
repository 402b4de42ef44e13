# autoglm-server: one static binary on an empty root (deploy/build-images.sh
# stages the context: the binary, /etc/passwd naming the autoglm user, and
# the data dir owned by it).
FROM scratch
COPY rootfs/ /
COPY --chown=10001:10001 data/ /var/lib/autoglm/
USER 10001:10001
# Listen on every address of the container; everything else comes from
# flags, AUTOGLM_* variables or a mounted --config file.
ENV AUTOGLM_LISTEN=0.0.0.0:7000 \
    AUTOGLM_HTTP_LISTEN=0.0.0.0:8000 \
    AUTOGLM_DATA_DIR=/var/lib/autoglm
VOLUME ["/var/lib/autoglm"]
EXPOSE 7000 8000
ENTRYPOINT ["/usr/local/bin/autoglm-server"]
