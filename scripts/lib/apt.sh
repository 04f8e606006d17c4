# apt_get runs apt-get, waiting for another apt or dpkg (a fresh machine's
# unattended-upgrades, a second setup script) to let go of its locks instead
# of failing at once. dpkg's frontend lock is waited for by apt itself
# (DPkg::Lock::Timeout); `apt-get update`'s lists lock is not, so a refusal
# to lock is retried too. Gives up after APT_LOCK_WAIT seconds (900).
# Sourced by the setup scripts.
apt_get() {
  local deadline=$((SECONDS + ${APT_LOCK_WAIT:-900})) out status said=
  while :; do
    status=0
    out=$(apt-get -o DPkg::Lock::Timeout=60 "$@" 2>&1) || status=$?
    if [ "$status" -eq 0 ]; then
      return 0
    fi
    case $out in
    *"Could not get lock"* | *"Unable to lock"* | *"Unable to acquire the dpkg frontend lock"*)
      if [ "$SECONDS" -lt "$deadline" ]; then
        [ -n "$said" ] || echo "apt: another apt or dpkg holds the lock; waiting (up to ${APT_LOCK_WAIT:-900}s)" >&2
        said=1
        sleep 5
        continue
      fi
      ;;
    esac
    printf '%s\n' "$out" >&2
    return "$status"
  done
}
