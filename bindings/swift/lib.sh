# Sourced by test.sh and bench.sh: `swift_env LIBDIR` puts LIBDIR (where cargo put libtandem.so
# and tandem-server) on LD_LIBRARY_PATH, mounts it into the Swift root when it is outside the
# repository, and sets $with_swift to the command that runs Swift here.
swift_env() { # swift_env LIBDIR   (run from the repository root, $repo set)
  export LD_LIBRARY_PATH="$1${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # with-swift passes LD_LIBRARY_PATH (and nothing else) into its Swift root: Package.swift links
  # against, and the tests find tandem-server in, the directories it names.
  case "$1/" in
    "$repo"/*) ;;
    *) export TANDEM_SWIFT_MOUNTS="$1${TANDEM_SWIFT_MOUNTS:+:$TANDEM_SWIFT_MOUNTS}" ;;
  esac
  # with-swift lives in the workplace's shared tools, next to the repository (or at /work/shared
  # when the repository is cloned elsewhere, as CI may do).
  with_swift=${TANDEM_WITH_SWIFT:-$repo/../shared/tools/with-swift}
  [ -x "$with_swift" ] || with_swift=/work/shared/tools/with-swift
  if [ ! -x "$with_swift" ]; then
    if command -v swift >/dev/null 2>&1; then
      with_swift=env  # a machine with Swift installed (macOS, or Linux with a Swift toolchain)
    else
      echo "no Swift: neither ../shared/tools/with-swift nor swift on PATH" >&2
      exit 1
    fi
  fi
}
