# llamacpp.sh — sourced by the bench scripts: find one of llama.cpp's prebuilt
# tools, unpacking the archive from ../shared once into the cache.
#   llamacpp_tool NAME LOG   sets PEER (path) or PEER_WHY (why it is missing)
# Needs LLAMA_DIR and LLAMA_ARCHIVE set by the caller.
llamacpp_tool() {
  local name=$1 log=$2
  PEER=""
  PEER_WHY=""
  if [ -x "$LLAMA_DIR/$name" ]; then
    PEER=$LLAMA_DIR/$name
  elif [ -f "$LLAMA_ARCHIVE" ]; then
    mkdir -p "$LLAMA_DIR"
    if tar xJf "$LLAMA_ARCHIVE" -C "$LLAMA_DIR" 2>"$log" && [ -x "$LLAMA_DIR/$name" ]; then
      PEER=$LLAMA_DIR/$name
    else
      PEER_WHY="could not unpack $LLAMA_ARCHIVE: $(head -c 300 "$log")"
    fi
  else
    PEER_WHY="llama.cpp tools archive not found ($LLAMA_ARCHIVE)"
  fi
}
