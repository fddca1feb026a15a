// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {AssetNFT} from "./AssetNFT.sol";
import {RevenueSplitter} from "./RevenueSplitter.sol";

/// @title Marketplace
/// @notice Fixed-price sales of {AssetNFT} tokens for Auton. Every sale pays the seller, the token's
/// ERC-2981 royalty, the contributors of the model version that made the asset (through the
/// {RevenueSplitter}) and the treasury fee.
/// @dev Listings are approvals, not escrow: the seller keeps the token and approves this contract. A
/// listing is bound to its seller; once the token has moved, `buy` reverts with {StaleListing} and the new
/// owner's own `list` replaces it (if the token comes back to the seller, the listing is live again).
/// The buyer pays once, into this contract; seller, royalty receiver and treasury are credited and pull
/// with {withdraw} (Auton has no transfer hooks, so pushing could not be blocked, but crediting keeps each
/// payee's vote checkpoints out of the buyer's gas). The contributors' part is deposited in the splitter
/// during the sale. Royalties cannot be skipped here: every `buy` pays `royaltyInfo`; transfers outside the
/// marketplace are plain ERC-721 transfers. Rounding favours the seller (each cut is rounded down). The
/// owner (the timelock) sets the fees, within caps, and the treasury.
contract Marketplace is Ownable, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice An active listing.
    struct Listing {
        address seller;
        uint96 price;
    }

    /// @notice Highest treasury fee, in basis points (10%).
    uint256 public constant MAX_FEE_BPS = 1_000;
    /// @notice Highest contributors' fee, in basis points (10%).
    uint256 public constant MAX_CONTRIBUTOR_FEE_BPS = 1_000;

    /// @notice The Auton token prices are paid in.
    IERC20 public immutable token;
    /// @notice The asset collection traded here.
    AssetNFT public immutable nft;
    /// @notice Where model-version contributors' fees go.
    RevenueSplitter public immutable splitter;

    /// @notice Receives the treasury fee.
    address public treasury;
    /// @notice Treasury fee in basis points of the price.
    uint16 public feeBps;
    /// @notice Model contributors' fee in basis points of the price (charged when the asset names a version).
    uint16 public contributorFeeBps;

    mapping(uint256 tokenId => Listing) private _listings;
    /// @notice Auton credited to an account and not yet withdrawn.
    mapping(address account => uint256) public owed;

    /// @notice `seller` listed `tokenId` at `price`.
    event Listed(uint256 indexed tokenId, address indexed seller, uint256 price);
    /// @notice The listing of `tokenId` was cancelled by its seller.
    event Cancelled(uint256 indexed tokenId, address indexed seller);
    /// @notice `tokenId` was sold; `proceeds` went to the seller, the rest to the other payees.
    event Sold(
        uint256 indexed tokenId,
        address indexed seller,
        address indexed buyer,
        uint256 price,
        uint256 proceeds,
        address royaltyReceiver,
        uint256 royalty,
        uint256 contributorFee,
        uint256 fee
    );
    /// @notice `amount` was withdrawn to `account`.
    event Withdrawn(address indexed account, uint256 amount);
    /// @notice The fees changed.
    event FeesChanged(uint256 feeBps, uint256 contributorFeeBps);
    /// @notice The treasury changed.
    event TreasuryChanged(address treasury);

    /// @notice The caller does not own the token.
    error NotTokenOwner(uint256 tokenId, address caller);
    /// @notice This contract may not transfer the token.
    error MarketplaceNotApproved(uint256 tokenId);
    /// @notice The price is zero or does not fit 96 bits.
    error InvalidPrice(uint256 price);
    /// @notice The token is not listed.
    error NotListed(uint256 tokenId);
    /// @notice Only the seller may cancel.
    error NotSeller(uint256 tokenId, address caller);
    /// @notice The token has moved since it was listed.
    error StaleListing(uint256 tokenId, address seller, address owner);
    /// @notice The listing's price is above what the buyer accepts.
    error PriceAboveMax(uint256 price, uint256 maxPrice);
    /// @notice A fee is above its cap.
    error FeeTooHigh(uint256 bps, uint256 maxBps);
    /// @notice The treasury may not be the zero address.
    error InvalidTreasury();
    /// @notice Nothing is owed to the account.
    error NothingToWithdraw(address account);

    /// @param nft_ The asset collection; the splitter and the token are read from its registry.
    /// @param treasury_ Receives the treasury fee (the timelock).
    /// @param initialOwner Sets the fees and the treasury (the timelock).
    /// @param feeBps_ Treasury fee, at most {MAX_FEE_BPS}.
    /// @param contributorFeeBps_ Contributors' fee, at most {MAX_CONTRIBUTOR_FEE_BPS}.
    constructor(AssetNFT nft_, address treasury_, address initialOwner, uint16 feeBps_, uint16 contributorFeeBps_)
        Ownable(initialOwner)
    {
        nft = nft_;
        splitter = nft_.registry().splitter();
        token = splitter.token();
        token.forceApprove(address(splitter), type(uint256).max);
        _setTreasury(treasury_);
        _setFees(feeBps_, contributorFeeBps_);
    }

    /// @notice Lists (or re-prices) a token the caller owns and has approved this contract for.
    /// @param tokenId The token.
    /// @param price Price in Auton wei, positive and below 2^96.
    function list(uint256 tokenId, uint256 price) external {
        if (nft.ownerOf(tokenId) != msg.sender) revert NotTokenOwner(tokenId, msg.sender);
        if (nft.getApproved(tokenId) != address(this) && !nft.isApprovedForAll(msg.sender, address(this))) {
            revert MarketplaceNotApproved(tokenId);
        }
        if (price == 0 || price > type(uint96).max) revert InvalidPrice(price);
        _listings[tokenId] = Listing(msg.sender, uint96(price));
        emit Listed(tokenId, msg.sender, price);
    }

    /// @notice Cancels the caller's listing.
    /// @param tokenId The token.
    function cancel(uint256 tokenId) external {
        if (_listings[tokenId].seller != msg.sender) revert NotSeller(tokenId, msg.sender);
        delete _listings[tokenId];
        emit Cancelled(tokenId, msg.sender);
    }

    /// @notice Buys a listed token: pulls the price from the caller (approve this contract first), credits
    /// the payees and transfers the token to the caller.
    /// @param tokenId The token.
    /// @param maxPrice The most the caller pays, so a seller cannot raise the price under a pending buy.
    function buy(uint256 tokenId, uint256 maxPrice) external nonReentrant {
        Listing memory listing = _listings[tokenId];
        if (listing.seller == address(0)) revert NotListed(tokenId);
        if (listing.price > maxPrice) revert PriceAboveMax(listing.price, maxPrice);
        address owner = nft.ownerOf(tokenId);
        if (owner != listing.seller) revert StaleListing(tokenId, listing.seller, owner);
        delete _listings[tokenId];

        uint256 price = listing.price;
        (address royaltyReceiver, uint256 royalty) = nft.royaltyInfo(tokenId, price);
        uint256 versionId = nft.modelVersionOf(tokenId);
        uint256 contributorFee = versionId == 0 ? 0 : price * contributorFeeBps / 10_000;
        uint256 fee = price * feeBps / 10_000;
        uint256 proceeds = price - royalty - contributorFee - fee;

        token.safeTransferFrom(msg.sender, address(this), price);
        owed[listing.seller] += proceeds;
        if (royalty != 0) owed[royaltyReceiver] += royalty;
        if (fee != 0) owed[treasury] += fee;
        if (contributorFee != 0) splitter.deposit(versionId, contributorFee);
        emit Sold(tokenId, listing.seller, msg.sender, price, proceeds, royaltyReceiver, royalty, contributorFee, fee);

        nft.safeTransferFrom(listing.seller, msg.sender, tokenId);
    }

    /// @notice Sends `account` everything credited to it. Anyone may call; the tokens go to `account`.
    /// @param account The payee.
    /// @return amount The amount sent.
    function withdraw(address account) external nonReentrant returns (uint256 amount) {
        amount = owed[account];
        if (amount == 0) revert NothingToWithdraw(account);
        owed[account] = 0;
        emit Withdrawn(account, amount);
        token.safeTransfer(account, amount);
    }

    /// @notice Sets the treasury and contributors' fees (owner only).
    /// @param feeBps_ Treasury fee, at most {MAX_FEE_BPS}.
    /// @param contributorFeeBps_ Contributors' fee, at most {MAX_CONTRIBUTOR_FEE_BPS}.
    function setFees(uint16 feeBps_, uint16 contributorFeeBps_) external onlyOwner {
        _setFees(feeBps_, contributorFeeBps_);
    }

    /// @notice Sets the treasury (owner only). Fees already credited stay with the old treasury.
    /// @param treasury_ The new treasury.
    function setTreasury(address treasury_) external onlyOwner {
        _setTreasury(treasury_);
    }

    /// @notice The listing of a token (seller zero when not listed). It may be stale; see {StaleListing}.
    function listingOf(uint256 tokenId) external view returns (Listing memory) {
        return _listings[tokenId];
    }

    function _setFees(uint16 feeBps_, uint16 contributorFeeBps_) private {
        if (feeBps_ > MAX_FEE_BPS) revert FeeTooHigh(feeBps_, MAX_FEE_BPS);
        if (contributorFeeBps_ > MAX_CONTRIBUTOR_FEE_BPS) {
            revert FeeTooHigh(contributorFeeBps_, MAX_CONTRIBUTOR_FEE_BPS);
        }
        feeBps = feeBps_;
        contributorFeeBps = contributorFeeBps_;
        emit FeesChanged(feeBps_, contributorFeeBps_);
    }

    function _setTreasury(address treasury_) private {
        if (treasury_ == address(0)) revert InvalidTreasury();
        treasury = treasury_;
        emit TreasuryChanged(treasury_);
    }
}
