#ifndef RAHA_CNETFILTERQUEUE_SHIM_H
#define RAHA_CNETFILTERQUEUE_SHIM_H

#include <stdint.h>
#include <sys/types.h>
#include <arpa/inet.h>
#include <linux/netfilter.h>         /* NF_ACCEPT, NF_DROP */
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <linux/netfilter/nfnetlink_queue.h>   /* NFQNL_COPY_PACKET */

/* The packet id of a queued packet in host byte order, or 0 without a header.
   (struct nfqnl_msg_packet_hdr is packed, so read it here rather than in Swift.) */
static inline uint32_t raha_nfq_packet_id(struct nfq_data *data) {
    struct nfqnl_msg_packet_hdr *header = nfq_get_msg_packet_hdr(data);
    return header ? ntohl(header->packet_id) : 0;
}

#endif
