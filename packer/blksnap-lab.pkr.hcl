# The blksnap lab image: Packer 1.6.6's built-in QEMU builder boots the base disk made by
# base/make-base.sh (Debian, the selected kernel and its headers, the tools, deno), uploads the
# service bundle and the lab's guest agent, runs provision.sh and shuts down. No `packer init`,
# no network beyond a loopback SSH forward; run with CHECKPOINT_DISABLE=1.
#
# deno task lab fills every variable. By hand (from the folder holding base.qcow2):
#   CHECKPOINT_DISABLE=1 packer build -var base_image=$PWD/base.qcow2 \
#     -var base_checksum=sha256:$(sha256sum base.qcow2 | cut -d' ' -f1) \
#     -var kernel=$PWD/vmlinuz -var initrd=$PWD/initrd.img -var payload_dir=$PWD/payload \
#     -var kernel_package=linux-image-amd64 \
#     -var ssh_private_key_file=$PWD/build_key -var ssh_public_key_b64=$(base64 -w0 build_key.pub) \
#     -var output_dir=$PWD/image -var serial_log=$PWD/serial.log /path/to/packer/
#
# The build's root login: build_key is generated for one build; its public half travels on the
# kernel command line and lives in /run only (see base/rootfs/etc/ssh/sshd_config.d), so the
# image never holds a key or a password.

variable "base_image" {
  type        = string
  description = "Absolute path of base.qcow2 from make-base.sh."
}

variable "base_checksum" {
  type        = string
  description = "sha256:<hex> of base_image."
}

variable "kernel" {
  type        = string
  description = "The base disk's kernel (vmlinuz), booted directly."
}

variable "initrd" {
  type        = string
  description = "The base disk's initrd."
}

variable "kernel_package" {
  type        = string
  default     = "linux-image-amd64"
  description = <<-EOT
    Kernel package of the image: linux-image-amd64 (Debian's 6.1, generic), linux-image-cloud-amd64,
    linux-image-rt-amd64, or a versioned linux-image-6.1.0-NN-amd64. base/make-base.sh installs it
    (and the matching linux-headers package) into the base disk, since the guest has no network;
    provision.sh checks that the image boots it and has its headers.
  EOT
}

variable "payload_dir" {
  type        = string
  description = "Folder uploaded to /tmp/payload: the lab's guest files and the service bundle."
}

variable "ssh_private_key_file" {
  type        = string
  description = "Private half of the per-build SSH key."
}

variable "ssh_public_key_b64" {
  type        = string
  description = "Base64 of the per-build public key line, handed over on the kernel command line."
}

variable "output_dir" {
  type        = string
  description = "Where the image is written; must not exist."
}

variable "serial_log" {
  type        = string
  description = "File receiving the guest's serial console."
}

variable "accelerator" {
  type    = string
  default = "tcg"
}

variable "memory" {
  type    = number
  default = 2048
}

variable "cpus" {
  type    = number
  default = 2
}

variable "disk_size" {
  type    = string
  default = "6G"
}

source "qemu" "lab" {
  iso_url          = "file://${var.base_image}"
  iso_checksum     = var.base_checksum
  disk_image       = true
  format           = "qcow2"
  disk_size        = var.disk_size
  disk_interface   = "virtio"
  output_directory = var.output_dir
  vm_name          = "blksnap-lab.qcow2"
  accelerator      = var.accelerator
  memory           = var.memory
  cpus             = var.cpus
  headless         = true
  vnc_bind_address = "127.0.0.1"

  communicator         = "ssh"
  ssh_host             = "127.0.0.1"
  ssh_username         = "root"
  ssh_private_key_file = var.ssh_private_key_file
  ssh_timeout          = "15m"
  shutdown_command     = "systemctl poweroff"
  shutdown_timeout     = "5m"

  qemuargs = [
    ["-cpu", "max"],
    ["-kernel", var.kernel],
    ["-initrd", var.initrd],
    ["-append", "root=/dev/vda rw console=ttyS0 net.ifnames=0 blksnap_lab.ssh_key=${var.ssh_public_key_b64}"],
    # Replaces Packer's default netdev, which would forward SSH on every interface.
    ["-netdev", "user,id=user.0,restrict=on,hostfwd=tcp:127.0.0.1:{{ .SSHHostPort }}-:22"],
    ["-serial", "file:${var.serial_log}"],
  ]
}

build {
  sources = ["source.qemu.lab"]

  provisioner "shell" {
    inline = ["mkdir -p /tmp/payload"]
  }

  provisioner "file" {
    source      = "${var.payload_dir}/"
    destination = "/tmp/payload/"
  }

  provisioner "shell" {
    script           = "${path.root}/provision.sh"
    environment_vars = ["KERNEL_PACKAGE=${var.kernel_package}"]
  }
}
