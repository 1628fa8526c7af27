# shellcheck shell=bash
# Building interop/java (our Java Avro / Kafka-client tools), shared by scripts/golden-vectors
# and scripts/java-produce so that their builds agree: one build directory, one stamp of the
# sources, one class path. The caller defines `die` and `info` and sets ROOT, MAILGUARD_CACHE
# and MAILGUARD_M2.

IJ_PROJECT=$ROOT/interop/java
IJ_WORK=$MAILGUARD_CACHE/golden-vectors
IJ_BUILD=$IJ_WORK/build

# A hash of the project's sources: the build is redone when it changes.
ij_stamp() {
  (cd "$IJ_PROJECT" && find pom.xml src -type f -print0 | LC_ALL=C sort -z \
    | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
}

# True if the build is of these sources and its jars are all still there.
ij_current() {
  local stamp=$1 jar jars
  [[ -f $IJ_BUILD/.stamp && $(<"$IJ_BUILD/.stamp") == "$stamp" && -f $IJ_BUILD/classpath.txt ]] || return 1
  # The class path names jars in the Maven repository; it may have been wiped since.
  # (a here-string: the file has no final newline, on which `read` would fail)
  IFS=: read -r -a jars <<<"$(<"$IJ_BUILD/classpath.txt")"
  for jar in "${jars[@]}"; do [[ -f $jar ]] || return 1; done
}

# Compile and write the runtime class path (first run: Maven fetches Avro and kafka-clients).
ij_build() {
  local stamp=$1
  command -v mvn >/dev/null 2>&1 || die "mvn not found (try scripts/ensure-deps)"
  info "building interop/java with Maven (first run fetches Avro and kafka-clients into $MAILGUARD_M2) ..."
  rm -rf "$IJ_BUILD"   # no stale classes of deleted sources
  mkdir -p "$IJ_BUILD" "$MAILGUARD_M2"
  if ! mvn -q -B -Dstyle.color=never -f "$IJ_PROJECT/pom.xml" \
      -Dmaven.repo.local="$MAILGUARD_M2" -Dmailguard.build.dir="$IJ_BUILD" \
      compile dependency:build-classpath \
      -Dmdep.outputFile="$IJ_BUILD/classpath.txt" -Dmdep.includeScope=runtime \
      >"$IJ_WORK/mvn.log" 2>&1; then
    cat "$IJ_WORK/mvn.log" >&2
    die "Maven build of interop/java failed (log above, also in $IJ_WORK/mvn.log)"
  fi
  printf '%s\n' "$stamp" >"$IJ_BUILD/.stamp"
}

# The class path to run the tools with.
ij_classpath() { echo "$IJ_BUILD/classes:$(<"$IJ_BUILD/classpath.txt")"; }
